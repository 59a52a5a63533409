"""Database access: the engine, sessions, Alembic migrations and the readiness check."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from geo import localdb
from geo.settings import Settings, get_settings

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


class DatabaseNotReady(RuntimeError):
    """The database is unreachable, lacks PostGIS, or is not migrated; the message says which."""


def local_cluster(settings: Settings | None = None) -> localdb.LocalCluster:
    """The project-managed cluster under the settings' var directory (or under /var/lib when that is unreachable)."""
    return localdb.LocalCluster(localdb.cluster_root((settings or get_settings()).var_dir))


def normalise_url(url: str) -> str:
    """Use psycopg 3 for plain ``postgresql://`` URLs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def database_url(settings: Settings | None = None, start_local: bool = False) -> str:
    """`DATABASE_URL` when set; otherwise the local cluster's URL (started first when `start_local`)."""
    settings = settings or get_settings()
    if settings.database_url:
        return normalise_url(settings.database_url)
    cluster = local_cluster(settings)
    return localdb.up(cluster) if start_local else cluster.url()


def make_engine(url: str) -> Engine:
    """An engine with a modest pool (the machine has two cores)."""
    return create_engine(normalise_url(url), pool_size=10, max_overflow=10, pool_pre_ping=True)


@lru_cache
def get_engine() -> Engine:
    """The process-wide engine for the configured database."""
    return make_engine(database_url())


@lru_cache
def _sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """A session committed on success and rolled back on error: writes are all-or-nothing."""
    session = _sessionmaker(engine or get_engine())()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str):
    """Alembic configuration pointing at the packaged migrations."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return cfg


def migrate(url: str, revision: str = "heads") -> None:
    """Upgrade the schema to `revision` (all heads by default)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    """Downgrade the schema to `revision`."""
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def migration_heads(url: str) -> tuple[set[str], set[str]]:
    """(revisions the code knows as heads, revisions the database is at)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(url))
    with make_engine(url).connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    return set(script.get_heads()), current


def readiness(engine: Engine) -> dict:
    """Check the database is reachable, has PostGIS and is migrated; raise DatabaseNotReady otherwise."""
    try:
        with engine.connect() as conn:
            pg = conn.execute(text("SHOW server_version")).scalar()
            has_postgis = conn.execute(
                text("SELECT 1 FROM pg_extension WHERE extname = 'postgis'")
            ).scalar()
            postgis = conn.execute(text("SELECT postgis_lib_version()")).scalar() if has_postgis else None
    except Exception as exc:  # any driver error means "not reachable"
        raise DatabaseNotReady(f"database unreachable: {exc.__class__.__name__}: {str(exc).splitlines()[0]}") from exc
    if not postgis:
        raise DatabaseNotReady("PostGIS is not installed in this database (CREATE EXTENSION postgis)")
    heads, current = migration_heads(engine.url.render_as_string(hide_password=False))
    if heads != current:
        raise DatabaseNotReady(f"migrations not at head: database at {sorted(current)}, code at {sorted(heads)}")
    return {"postgres": pg, "postgis": postgis, "migrations": sorted(current)}
