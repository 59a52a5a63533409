"""The embedded default: a project-managed PostgreSQL 15 + PostGIS 3 cluster under ``var/pg``.

Used when no ``DATABASE_URL`` is set. ``initdb`` refuses to run as root, so as root the cluster belongs to an
unprivileged system user (``gridatlas``). The cluster listens on loopback only, on a free port chosen at first
start and remembered; the passwords are random and kept in ``var/pg/credentials`` (mode 0600).

Two database roles: ``gridatlas`` is the cluster's superuser and owns the schema (migrations, demo loads);
the service connects as ``gridatlas_service``, a login role without superuser rights that is a member of the
privilege group ``gridatlas_app`` (what that group may do is granted by ``geo.store.db.grant_app_privileges``). A
non-superuser cannot switch triggers off (``session_replication_role``), so the audit log stays append-only.
Commits are durable (``synchronous_commit = on``, ``fsync = on``): a write answered 201 survives a crash.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from geo.errors import DomainError

PG_VERSION = "15"
PG_BIN = Path(f"/usr/lib/postgresql/{PG_VERSION}/bin")
POSTGIS_CONTROL = Path(f"/usr/share/postgresql/{PG_VERSION}/extension/postgis.control")
SYSTEM_USER = "gridatlas"
DB_NAME = "gridatlas"
DB_ROLE = "gridatlas"
#: The login role the service uses (no superuser, no CREATEDB/CREATEROLE), member of APP_GROUP.
SERVICE_ROLE = "gridatlas_service"
#: The privilege group the schema's grants name (also what an external deployment grants to its own login role).
APP_GROUP = "gridatlas_app"
#: Settings the cluster must run with whatever an older postgresql.conf says (ALTER SYSTEM overrides it).
DURABILITY = {"synchronous_commit": "on", "fsync": "on", "full_page_writes": "on"}
APT_PACKAGES = (f"postgresql-{PG_VERSION}", f"postgresql-{PG_VERSION}-postgis-3")
INSTALL_HINT = "apt-get update && apt-get install -y " + " ".join(APT_PACKAGES)


class LocalDBError(DomainError, RuntimeError):
    """The local cluster cannot be brought up; the message says what to do."""

    slug = "local-database"
    kind = "unavailable"


@dataclass(frozen=True)
class LocalCluster:
    """Paths and credentials of the project-managed cluster."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    @property
    def credentials_file(self) -> Path:
        return self.root / "credentials"

    def credentials(self) -> dict:
        """Port and passwords, created on first use (a service password is added to older files)."""
        if self.credentials_file.exists():
            creds = json.loads(self.credentials_file.read_text())
            if "service_password" in creds:
                return creds
        else:
            creds = {"port": free_port(), "password": secrets.token_urlsafe(24)}
        creds["service_password"] = secrets.token_urlsafe(24)
        self.root.mkdir(parents=True, exist_ok=True)
        self.credentials_file.write_text(json.dumps(creds))
        self.credentials_file.chmod(0o600)
        return creds

    def url(self, database: str = DB_NAME) -> str:
        """SQLAlchemy URL of a database in this cluster, as the superuser that owns the schema."""
        c = self.credentials()
        return f"postgresql+psycopg://{DB_ROLE}:{c['password']}@127.0.0.1:{c['port']}/{database}"

    def service_url(self, database: str = DB_NAME) -> str:
        """SQLAlchemy URL of a database in this cluster, as the service's unprivileged login role."""
        c = self.credentials()
        return f"postgresql+psycopg://{SERVICE_ROLE}:{c['service_password']}@127.0.0.1:{c['port']}/{database}"


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port."""
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def ensure_installed() -> None:
    """Install PostgreSQL 15 + PostGIS 3 from Debian when missing (as root), else explain how."""
    if (PG_BIN / "initdb").exists() and POSTGIS_CONTROL.exists():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise LocalDBError(f"PostgreSQL {PG_VERSION} + PostGIS 3 are not installed. Run as root: {INSTALL_HINT}")
    # Debian would otherwise create and start its own 'main' cluster on 5432, which we do not use.
    conf = Path("/etc/postgresql-common/createcluster.conf")
    conf.parent.mkdir(parents=True, exist_ok=True)
    if not conf.exists() or "create_main_cluster = false" not in conf.read_text():
        with conf.open("a") as f:
            f.write("\ncreate_main_cluster = false\n")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *APT_PACKAGES]):
        if subprocess.run(cmd, env=env).returncode != 0:
            raise LocalDBError(f"installing PostgreSQL failed; run as root: {INSTALL_HINT}")


def _owner() -> str | None:
    """The system user that owns the cluster: ourselves, or `gridatlas` when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER], check=True
        )
    return SYSTEM_USER


def _as_owner(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    owner = _owner()
    if owner:
        cmd = ["runuser", "-u", owner, "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def _chown_tree(path: Path) -> None:
    owner = _owner()
    if owner:
        shutil.chown(path, owner, owner)
        for p in path.rglob("*"):
            shutil.chown(p, owner, owner)


def _traversable_by_others(path: Path) -> bool:
    return all(not p.exists() or p.stat().st_mode & 0o001 for p in [path, *path.parents])


def cluster_root(var_dir: Path) -> Path:
    """`var_dir/pg`, unless root runs us from a folder the unprivileged owner cannot reach (say under /root):
    then a folder under /var/lib/gridatlas named after the project's path, so each checkout keeps its own."""
    var_dir = var_dir.resolve()
    if os.geteuid() != 0 or _traversable_by_others(var_dir.parent):
        return var_dir / "pg"
    digest = hashlib.sha256(str(var_dir).encode()).hexdigest()[:12]
    return Path("/var/lib/gridatlas") / f"pg-{digest}"


def _is_zombie(pid: int) -> bool:
    """Whether `pid` has died but not been reaped (where PID 1 reaps nothing, a killed postmaster stays so)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


def is_running(cluster: LocalCluster) -> bool:
    """Whether the cluster's postmaster is alive (a stale pid file, or one naming a zombie, counts as not)."""
    if not (cluster.data / "PG_VERSION").exists():
        return False
    pidfile = cluster.data / "postmaster.pid"
    try:
        if _is_zombie(int(pidfile.read_text().split()[0])):
            return False
    except (OSError, IndexError, ValueError):
        pass
    r = _as_owner([str(PG_BIN / "pg_ctl"), "status", "-D", str(cluster.data)])
    return r.returncode == 0


def _clear_stale_pid(cluster: LocalCluster) -> None:
    """After a crash or kill -9 the pid file outlives the server; postgres refuses to start while it names a live
    pid."""
    pidfile = cluster.data / "postmaster.pid"
    if pidfile.exists() and not is_running(cluster):
        pidfile.unlink()
        # the socket's lock file names the dead postmaster too, and postgres refuses to start while its pid exists
        for lock in cluster.socket_dir.glob(".s.PGSQL.*.lock"):
            lock.unlink(missing_ok=True)


def init(cluster: LocalCluster) -> None:
    """Create the cluster's data directory (initdb) if it does not exist yet."""
    if (cluster.data / "PG_VERSION").exists():
        return
    cluster.root.mkdir(parents=True, exist_ok=True)
    cluster.socket_dir.mkdir(exist_ok=True)
    creds = cluster.credentials()
    pwfile = cluster.root / "pwfile"
    pwfile.write_text(creds["password"] + "\n")
    if cluster.data.exists():
        shutil.rmtree(cluster.data)  # a half-made directory from an interrupted initdb
    _chown_tree(cluster.root)
    cluster.root.chmod(0o700)
    r = _as_owner(
        [
            str(PG_BIN / "initdb"),
            "-D", str(cluster.data),
            "-U", DB_ROLE,
            "--pwfile", str(pwfile),
            "--auth-host=scram-sha-256",
            "--auth-local=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
        ]
    )
    pwfile.unlink()
    if r.returncode != 0:
        raise LocalDBError(f"initdb failed:\n{r.stdout}\n{r.stderr}")
    with (cluster.data / "postgresql.conf").open("a") as f:
        # Tuned for a small machine; commits stay durable (see DURABILITY): this is a real store, not a throwaway.
        f.write(
            "\nlisten_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{cluster.socket_dir}'\n"
            "shared_buffers = 512MB\nwork_mem = 64MB\nmaintenance_work_mem = 256MB\n"
            "max_connections = 100\n"
        )


def up(cluster: LocalCluster) -> str:
    """Start the cluster (idempotent), create the database with PostGIS, and return its URL."""
    ensure_installed()
    init(cluster)
    if not is_running(cluster):
        _clear_stale_pid(cluster)
        creds = cluster.credentials()
        if port_in_use(creds["port"]):
            creds["port"] = free_port()
            cluster.credentials_file.write_text(json.dumps(creds))
        r = _as_owner(
            [
                str(PG_BIN / "pg_ctl"), "start", "-w", "-t", "60",
                "-D", str(cluster.data),
                "-l", str(cluster.log),
                "-o", f"-p {creds['port']}",
            ]
        )
        if r.returncode != 0:
            tail = cluster.log.read_text()[-2000:] if cluster.log.exists() else ""
            raise LocalDBError(f"PostgreSQL did not start:\n{r.stdout}{r.stderr}\n{tail}")
    ensure_durable(cluster.url("postgres"))
    ensure_service_role(cluster.url("postgres"), cluster.credentials()["service_password"])
    ensure_database(cluster.url(), create_from=cluster.url("postgres"))
    return cluster.url()


def down(cluster: LocalCluster) -> bool:
    """Stop the cluster; False when it was not running."""
    if not is_running(cluster):
        _clear_stale_pid(cluster)
        return False
    r = _as_owner([str(PG_BIN / "pg_ctl"), "stop", "-m", "fast", "-w", "-D", str(cluster.data)])
    if r.returncode != 0:
        raise LocalDBError(f"pg_ctl stop failed: {r.stderr}")
    return True


def connect(url: str, timeout_s: float = 30):
    """A psycopg autocommit connection to `url`, retried while the server is starting."""
    import psycopg
    from sqlalchemy.engine import make_url

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return psycopg.connect(dsn, autocommit=True)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def ensure_durable(superuser_url: str) -> None:
    """Turn on every setting in DURABILITY that is off (clusters made before it was the default ran with
    synchronous_commit = off and lost acknowledged writes in a crash)."""
    with connect(superuser_url) as conn:
        changed = False
        for name, value in DURABILITY.items():
            if conn.execute(f"SHOW {name}").fetchone()[0] != value:
                conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
                changed = True
        if changed:
            conn.execute("SELECT pg_reload_conf()")


def ensure_service_role(admin_url: str, password: str, role: str = SERVICE_ROLE, group: str = APP_GROUP) -> bool:
    """Create (or re-password) the privilege group and the service's login role, neither a superuser; False
    when the admin connection may not create roles (its operator then manages them)."""
    from psycopg import sql

    with connect(admin_url) as conn:
        can = conn.execute("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user").fetchone()
        if not (can and can[0]):
            return False
        roles = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)",
                                            ([group, role],)).fetchall()}
        if group not in roles:
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(group)))
        verb = "ALTER" if role in roles else "CREATE"
        conn.execute(sql.SQL(verb + " ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                             "NOBYPASSRLS PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(role)))
    return True


def ensure_database(url: str, create_from: str) -> None:
    """Create the database named in `url` if missing (connecting through `create_from`)."""
    from sqlalchemy.engine import make_url

    target = make_url(url)
    with connect(create_from) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target.database,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{target.database}"')


def status(cluster: LocalCluster) -> dict:
    """What `gridatlas db status` prints."""
    initialised = (cluster.data / "PG_VERSION").exists()
    running = is_running(cluster) if initialised else False
    info = {"data_dir": str(cluster.data), "initialised": initialised, "running": running}
    if initialised:
        info["url"] = cluster.url().replace(cluster.credentials()["password"], "***")
    return info
