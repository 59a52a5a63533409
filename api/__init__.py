"""GridAtlas HTTP API (FastAPI): thin routers over the domain layer in `geo`."""
