"""Database access: the engine, sessions, Alembic migrations and the readiness check."""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from geo.errors import DomainError
from geo.settings import Settings, get_settings
from geo.store import localdb

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


class DatabaseNotReady(DomainError, RuntimeError):
    """The database is unreachable, lacks PostGIS, or is not migrated; the message says which."""

    slug = "not-ready"
    kind = "unavailable"
    title = "Service not ready"


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
    """The service's URL: `DATABASE_URL` when set; otherwise the local cluster's unprivileged service role
    (the cluster started first when `start_local`)."""
    settings = settings or get_settings()
    if settings.database_url:
        return normalise_url(settings.database_url)
    cluster = local_cluster(settings)
    if start_local:
        localdb.up(cluster)
    return cluster.service_url()


def admin_database_url(settings: Settings | None = None, start_local: bool = False) -> str:
    """The schema owner's URL (migrations, demo loads, creating databases): `GRIDATLAS_ADMIN_DATABASE_URL`,
    else `DATABASE_URL`, else the local cluster's superuser (the cluster started first when `start_local`)."""
    settings = settings or get_settings()
    if settings.admin_database_url or settings.database_url:
        return normalise_url(settings.admin_database_url or settings.database_url or "")
    cluster = local_cluster(settings)
    return localdb.up(cluster) if start_local else cluster.url()


def ensure_service_login(admin_url: str, service_url: str, settings: Settings | None = None) -> None:
    """When the service connects as another role than the schema owner, make sure that login role exists with
    its URL's password and belongs to the privilege group (skipped where the owner may not create roles)."""
    from sqlalchemy.engine import make_url

    admin, service = make_url(normalise_url(admin_url)), make_url(normalise_url(service_url))
    if admin.username == service.username or not service.username or service.password is None:
        return
    localdb.ensure_service_role(admin_url, str(service.password), role=service.username,
                                group=(settings or get_settings()).app_role)


def service_url_for(admin_url: str, settings: Settings | None = None) -> str:
    """The service's URL for the database that `admin_url` names (a scratch database in tests and benchmarks)."""
    from sqlalchemy.engine import make_url

    settings = settings or get_settings()
    database = make_url(admin_url).database or localdb.DB_NAME
    if settings.database_url:
        return make_url(normalise_url(settings.database_url)).set(database=database).render_as_string(
            hide_password=False)
    return local_cluster(settings).service_url(database)


def make_engine(url: str, *, pooled: bool = False, direct_url: str | None = None) -> Engine:
    """An engine with a modest pool (the machine has two cores). `pooled`: `url` goes through a transaction-mode
    pooler (PgBouncer), which gives each transaction whichever server connection is free, so psycopg must not
    prepare statements on the server (``prepare_threshold=None``); `direct_url` then names the server itself, for
    what needs one session throughout (LISTEN, see `listen_url`)."""
    connect_args: dict = {"prepare_threshold": None} if pooled else {}
    engine = create_engine(normalise_url(url), pool_size=10, max_overflow=10, pool_pre_ping=True,
                           connect_args=connect_args)
    if direct_url:
        _DIRECT_URLS[engine] = normalise_url(direct_url)
    return engine


#: Engines behind a transaction pooler → the URL of the server itself.
_DIRECT_URLS: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()


def listen_url(engine: Engine) -> str:
    """The libpq URL a LISTEN connection for `engine` uses: the server itself when `engine` goes through a
    transaction-mode pooler (it hands the server connection to another client after each transaction, and the
    notifications with it), else the engine's own URL."""
    from sqlalchemy.engine import make_url

    url = make_url(_DIRECT_URLS[engine]) if engine in _DIRECT_URLS else engine.url
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@lru_cache
def get_engine() -> Engine:
    """The process-wide engine for the configured database (through PgBouncer when
    `GRIDATLAS_DATABASE_TRANSACTION_POOLING`; LISTEN then on `GRIDATLAS_DIRECT_DATABASE_URL`)."""
    settings = get_settings()
    if settings.database_transaction_pooling:
        return make_engine(database_url(), pooled=True, direct_url=settings.direct_database_url)
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
    """Upgrade the schema to `revision` (all heads by default), then grant the service's rights."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)
    grant_app_privileges(url)


def grant_app_privileges(url: str, role: str | None = None) -> None:
    """Grant the privilege group what the service needs and no more: read and write the data, run the functions,
    use the sequences; on the audit log only SELECT and INSERT. Idempotent, run after every migration (as the
    schema owner) so tables added later are covered. The group is created (NOLOGIN) when missing and allowed."""
    from psycopg import sql

    role = role or get_settings().app_role
    with localdb.connect(url) as raw:
        exists = raw.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        if not exists:
            can = raw.execute("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user"
                              ).fetchone()
            if not (can and can[0]):
                return  # an external deployment without the group: its operator grants rights by hand
            raw.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        r = sql.Identifier(role)
        for stmt in (
            "GRANT USAGE ON SCHEMA public TO {r}",
            "GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public TO {r}",
            "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {r}",
            "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO {r}",
        ):
            raw.execute(sql.SQL(stmt).format(r=r))
        if raw.execute("SELECT to_regclass('public.audit_log')").fetchone()[0]:
            raw.execute(sql.SQL("REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM {r}").format(r=r))


def downgrade(url: str, revision: str = "base") -> None:
    """Downgrade the schema to `revision`."""
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def _script_heads() -> frozenset[str]:
    """The migration heads the code knows; parsed again only when a migration file is added, removed or changed."""
    versions = MIGRATIONS_DIR / "versions"
    stamp = tuple(sorted((entry.name, entry.stat().st_mtime_ns) for entry in os.scandir(versions)
                         if entry.name.endswith(".py")))
    return _parse_script_heads(stamp)


@lru_cache(maxsize=4)
def _parse_script_heads(stamp: tuple) -> frozenset[str]:
    from alembic.script import ScriptDirectory

    return frozenset(ScriptDirectory.from_config(alembic_config("postgresql://")).get_heads())


def _current_heads(conn) -> set[str]:
    from alembic.runtime.migration import MigrationContext

    return set(MigrationContext.configure(conn).get_current_heads())


def migration_heads(url: str) -> tuple[set[str], set[str]]:
    """(revisions the code knows as heads, revisions the database at `url` is at); a short-lived engine."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            current = _current_heads(conn)
    finally:
        engine.dispose()
    return set(_script_heads()), current


def readiness(engine: Engine) -> dict:
    """Check the database is reachable, has PostGIS and is migrated; raise DatabaseNotReady otherwise.

    Runs on one connection of `engine`'s pool (the app's): no engine is built per call, so a probe every few
    seconds neither opens connections nor leaves any behind.
    """
    try:
        with engine.connect() as conn:
            pg = conn.execute(text("SHOW server_version")).scalar()
            has_postgis = conn.execute(
                text("SELECT 1 FROM pg_extension WHERE extname = 'postgis'")
            ).scalar()
            postgis = conn.execute(text("SELECT postgis_lib_version()")).scalar() if has_postgis else None
            current = _current_heads(conn) if postgis else set()
    except Exception as exc:  # any driver error means "not reachable"
        raise DatabaseNotReady(f"database unreachable: {exc.__class__.__name__}: {str(exc).splitlines()[0]}") from exc
    if not postgis:
        raise DatabaseNotReady("PostGIS is not installed in this database (CREATE EXTENSION postgis)")
    heads = set(_script_heads())
    if heads != current:
        raise DatabaseNotReady(f"migrations not at head: database at {sorted(current)}, code at {sorted(heads)}")
    return {"postgres": pg, "postgis": postgis, "migrations": sorted(current)}


# --- Reads from a hot standby (只读副本) ----------------------------------------------------------------------

#: How long one measurement of a replica's lag (or of its being unreachable) stands for every read request.
LAG_CACHE_S = 1.0
#: `application_name` of the read engine's connections (visible in the standby's pg_stat_activity).
READ_APPLICATION_NAME = "gridatlas-read"


def read_database_url(settings: Settings | None = None) -> str | None:
    """The hot standby's URL (`GRIDATLAS_READ_DATABASE_URL`), or None: reads then go to the primary."""
    url = (settings or get_settings()).read_database_url
    return normalise_url(url) if url else None


def make_read_engine(url: str) -> Engine:
    """An engine on a hot standby: the same pool as `make_engine`, its sessions named in pg_stat_activity."""
    return create_engine(normalise_url(url), pool_size=10, max_overflow=10, pool_pre_ping=True,
                         connect_args={"application_name": READ_APPLICATION_NAME, "connect_timeout": 5})


@lru_cache
def get_read_engine() -> Engine:
    """The process-wide engine for reads that tolerate lag: the standby's, else the primary's (`get_engine`)."""
    url = read_database_url()
    return make_read_engine(url) if url else get_engine()


#: The lag of the server a connection is on: NULL on a primary; 0 on a standby that has replayed all it received;
#: otherwise the age of the last transaction it replayed.
REPLICA_LAG_SQL = text(
    "SELECT pg_is_in_recovery() AS in_recovery, CASE WHEN NOT pg_is_in_recovery() THEN NULL "
    "WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0.0 "
    "ELSE coalesce(extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float, 0.0) END AS lag_s"
)


def replica_lag(conn) -> float | None:
    """Seconds the server behind `conn` lags its primary (None when it is a primary itself, e.g. promoted)."""
    row = conn.execute(REPLICA_LAG_SQL).one()
    return None if not row.in_recovery else max(0.0, float(row.lag_s))


class _ReadChoice:
    """The last measurement for one replica engine: when, the lag, and whether it answered at all."""

    def __init__(self) -> None:
        self.at = float("-inf")
        self.ok = False
        self.lag_s: float | None = None


_read_choices: weakref.WeakKeyDictionary[Engine, _ReadChoice] = weakref.WeakKeyDictionary()


def choose_read_engine(primary: Engine, replica: Engine) -> tuple[Engine, float | None]:
    """The engine a lag-tolerant read should use, and the replica's lag in seconds (None when reading from the
    primary). An unreachable replica sends reads to the primary instead of failing them; both answers stand for
    `LAG_CACHE_S`, so a busy process measures once a second, not once a request."""
    if replica is primary:
        return primary, None
    choice = _read_choices.setdefault(replica, _ReadChoice())
    now = time.monotonic()
    if now - choice.at > LAG_CACHE_S:
        try:
            with replica.connect() as conn:
                choice.lag_s = replica_lag(conn)
            choice.ok = True
        except Exception:  # any driver error: the standby is down or unreachable
            choice.ok, choice.lag_s = False, None
        choice.at = now
    return (replica, choice.lag_s) if choice.ok else (primary, None)


def replica_status(replica: Engine) -> dict:
    """What /readyz says of the read replica: reachable, still a standby, its lag (never raises)."""
    try:
        with replica.connect() as conn:
            lag = replica_lag(conn)
        return {"reachable": True, "standby": lag is not None, "lag_s": lag}
    except Exception as exc:  # unreachable: reads go to the primary meanwhile
        return {"reachable": False, "standby": None, "lag_s": None,
                "error": f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
