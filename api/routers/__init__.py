"""HTTP routers, one module per concept; each module's `router` is included by `api.main.create_app`."""
