"""Storage (存储): the PostGIS database and what lives in it.

- `db`: settings to URLs, the engine and sessions (`session_scope`), Alembic migrations (`migrate`), grants, the
  readiness check (`readiness`, `DatabaseNotReady`);
- `localdb`: the project-managed PostgreSQL cluster under var/ (`up`, `down`, `status`, service role);
- `models`: the tables (SQLAlchemy ORM); `migrations`: their Alembic history;
- `versions`: "in force at time t" in SQL (`in_force`, `at_or_now`);
- `load`: bulk writes and reads of whole layers (`load_district`, `read_level`, `version_at`, `parse_at`);
- `locks`: the per-community boundary-writer lock (`lock_communities`);
- `units`: a unit found by its code in any code scheme (`unit_condition`, `level_of`, `grid_code_of`).
- `transactions`: all-or-nothing work with a dry run (`dry_run_transaction`).
"""
