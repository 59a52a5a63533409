"""Pydantic models of the API's request and response bodies, one module per concept (what /openapi.json shows)."""
