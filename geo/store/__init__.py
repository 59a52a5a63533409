"""Storage: the engine and sessions (db), the local cluster (localdb), tables (models), Alembic migrations, bulk loads (load) and locks."""
