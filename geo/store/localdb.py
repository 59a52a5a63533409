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
            # Incidents are partitioned by month (0022): a query over years locks every partition and its indexes,
            # and the default of 64 per transaction ran out of shared memory under parallel runs.
            "max_locks_per_transaction = 256\n"
        )


def up(cluster: LocalCluster) -> str:
    """Start the cluster (idempotent), create the database with PostGIS, and return its URL."""
    ensure_installed()
    fenced = cluster.root / SUPERSEDED
    if fenced.exists():
        raise LocalDBError(f"{cluster.data} was replaced by its promoted standby ({fenced.read_text().strip()}); "
                           "starting it would split the data in two. Rebuild it as the new primary's standby "
                           "(scripts/cluster standby rejoin), or delete that file if you know better")
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


# --- Hot standby (流复制热备): a second local cluster streaming from the managed one --------------------------

#: The role the standby streams WAL as (REPLICATION LOGIN, nothing else).
REPLICATION_ROLE = "gridatlas_replication"
#: A standby's settings beside the primary's copied postgresql.conf: its own socket folder, a smaller cache, and
#: feedback so long tile/feature reads are not cancelled by the primary's vacuum.
STANDBY_CONF = "hot_standby = on\nhot_standby_feedback = on\nshared_buffers = 256MB\n"


#: A file in a cluster's root naming the standby promoted in its place: `up` then refuses to start it.
SUPERSEDED = "superseded"


def standby_root(primary_root: Path) -> Path:
    """Where the standby of the cluster at `primary_root` lives: a sibling folder (``pg`` → ``pg-standby``)."""
    return primary_root.with_name(primary_root.name + "-standby")


def slot_name(standby: LocalCluster) -> str:
    """The primary's replication slot for `standby` (it keeps the WAL the standby has not received yet)."""
    return "gridatlas_standby_" + hashlib.sha256(str(standby.root.resolve()).encode()).hexdigest()[:10]


def is_standby(cluster: LocalCluster) -> bool:
    """Whether the cluster's data directory is a standby's (``standby.signal``; gone once promoted)."""
    return (cluster.data / "standby.signal").exists()


def _replication_password(primary: LocalCluster) -> str:
    creds = primary.credentials()
    if "replication_password" not in creds:
        creds["replication_password"] = secrets.token_urlsafe(24)
        primary.credentials_file.write_text(json.dumps(creds))
        primary.credentials_file.chmod(0o600)
    return creds["replication_password"]


def ensure_replication_role(superuser_url: str, password: str) -> None:
    """Create (or re-password) the login role the standby streams as: REPLICATION, no other right."""
    from psycopg import sql

    with connect(superuser_url) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (REPLICATION_ROLE,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(sql.SQL(verb + " ROLE {} LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}")
                     .format(sql.Identifier(REPLICATION_ROLE), sql.Literal(password)))


def _drop_slot(primary: LocalCluster, slot: str) -> None:
    with connect(primary.url("postgres"), timeout_s=5) as conn:
        conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                     "WHERE slot_name = %s AND NOT active", (slot,))


def _start(cluster: LocalCluster) -> None:
    _clear_stale_pid(cluster)
    creds = cluster.credentials()
    if port_in_use(creds["port"]):
        creds["port"] = free_port()
        cluster.credentials_file.write_text(json.dumps(creds))
    r = _as_owner([str(PG_BIN / "pg_ctl"), "start", "-w", "-t", "120", "-D", str(cluster.data),
                   "-l", str(cluster.log), "-o", f"-p {creds['port']} -k {cluster.socket_dir}"])
    if r.returncode != 0:
        tail = cluster.log.read_text()[-2000:] if cluster.log.exists() else ""
        raise LocalDBError(f"PostgreSQL did not start:\n{r.stdout}{r.stderr}\n{tail}")


def standby_up(primary: LocalCluster, standby: LocalCluster) -> str:
    """Start `standby` as a hot standby of the running `primary` (idempotent); the standby's superuser URL.

    The first time, ``pg_basebackup`` copies the primary over a replication connection, creates the primary's
    replication slot for it and writes ``standby.signal`` + ``primary_conninfo`` (``-R``): the copy then streams
    the primary's WAL and answers read-only queries (hot standby). Roles and passwords are the primary's (it is a
    physical copy), so the same credentials work on both; only the port differs."""
    ensure_installed()
    if not is_running(primary):
        raise LocalDBError(f"the primary cluster at {primary.data} is not running (gridatlas db up)")
    if not (standby.data / "PG_VERSION").exists():
        password = _replication_password(primary)
        ensure_replication_role(primary.url("postgres"), password)
        p = primary.credentials()
        if standby.data.exists():
            shutil.rmtree(standby.data)  # a half-made copy from an interrupted basebackup
        standby.root.mkdir(parents=True, exist_ok=True)
        standby.socket_dir.mkdir(exist_ok=True)
        # a rebuilt standby keeps its port: the services' multi-host URLs name it
        port = json.loads(standby.credentials_file.read_text())["port"] if standby.credentials_file.exists() \
            else free_port()
        standby.credentials_file.write_text(json.dumps({
            "port": port, "password": p["password"], "service_password": p["service_password"],
            "primary_port": p["port"]}))
        standby.credentials_file.chmod(0o600)
        _chown_tree(standby.root)
        standby.root.chmod(0o700)
        slot = slot_name(standby)
        _drop_slot(primary, slot)  # left by a standby that was deleted without `standby_remove`
        r = _as_owner([str(PG_BIN / "pg_basebackup"), "-D", str(standby.data), "-h", "127.0.0.1",
                       "-p", str(p["port"]), "-U", REPLICATION_ROLE, "-X", "stream", "-C", "-S", slot, "-R",
                       "-c", "fast", "--no-password"],
                      env={**os.environ, "PGPASSWORD": password})
        if r.returncode != 0:
            shutil.rmtree(standby.data, ignore_errors=True)
            raise LocalDBError(f"pg_basebackup failed:\n{r.stdout}{r.stderr}")
        with (standby.data / "postgresql.conf").open("a") as f:
            f.write(f"\n# hot standby of {primary.data}\nunix_socket_directories = '{standby.socket_dir}'\n"
                    + STANDBY_CONF)
    if not is_running(standby):
        _start(standby)
    wait_streaming(primary, standby)
    return standby.url()


def wait_streaming(primary: LocalCluster, standby: LocalCluster, timeout_s: float = 60.0) -> None:
    """Wait until the primary streams WAL to `standby` through its slot (state ``streaming``, not ``catchup``)."""
    deadline = time.monotonic() + timeout_s
    with connect(primary.url("postgres"), timeout_s=10) as conn:
        while True:
            row = conn.execute("SELECT r.state FROM pg_replication_slots s JOIN pg_stat_replication r "
                               "ON r.pid = s.active_pid WHERE s.slot_name = %s", (slot_name(standby),)).fetchone()
            if row and row[0] == "streaming":
                return
            if time.monotonic() > deadline:
                raise LocalDBError(f"{standby.data} is not streaming from {primary.data} after {timeout_s:.0f} s "
                                   f"(state {row[0] if row else 'not connected'}; see {standby.log})")
            time.sleep(0.1)


def promote(standby: LocalCluster) -> bool:
    """Promote the standby to a primary (``pg_ctl promote``, waits until it accepts writes); False when it was
    not a standby. The old primary must stay stopped: it no longer receives the new primary's writes."""
    if not is_standby(standby):
        return False
    r = _as_owner([str(PG_BIN / "pg_ctl"), "promote", "-w", "-t", "60", "-D", str(standby.data)])
    if r.returncode != 0:
        raise LocalDBError(f"pg_ctl promote failed: {r.stdout}{r.stderr}")
    return True


def standby_remove(primary: LocalCluster, standby: LocalCluster) -> None:
    """Stop the standby, delete its folder and drop its slot on the primary (else the primary keeps WAL forever)."""
    down(standby)
    shutil.rmtree(standby.root, ignore_errors=True)
    if is_running(primary):
        _drop_slot(primary, slot_name(standby))


def replication_status(primary_superuser_url: str) -> list[dict]:
    """The primary's view of its standbys (pg_stat_replication): state and lag per standby."""
    with connect(primary_superuser_url, timeout_s=5) as conn:
        cur = conn.execute(
            "SELECT application_name, host(client_addr) AS client_addr, state, sync_state, "
            "pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint AS replay_lag_bytes, "
            "extract(epoch FROM replay_lag)::float AS replay_lag_s FROM pg_stat_replication")
        names = [c.name for c in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def fence(old_primary: LocalCluster, new_primary: LocalCluster) -> None:
    """Mark the old primary as replaced (after a failover): `up` refuses to start it, so two primaries never
    accept writes at once (libpq's multi-host URL would connect to whichever answers first)."""
    old_primary.root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    (old_primary.root / SUPERSEDED).write_text(f"{new_primary.data} promoted at {stamp}\n")


def failover(primary: LocalCluster, standby: LocalCluster) -> None:
    """Planned or forced failover: stop the primary if it still runs, fence it, promote the standby."""
    if is_running(primary):
        down(primary)
    fence(primary, standby)
    if not promote(standby):
        raise LocalDBError(f"{standby.data} is not a standby (already promoted?)")


def rejoin(old_primary: LocalCluster, new_primary: LocalCluster) -> str:
    """Rebuild the fenced old primary as a hot standby of the promoted one (a fresh pg_basebackup: its own WAL
    after the failover point is discarded); its URL. The two clusters have then swapped roles."""
    if not (old_primary.root / SUPERSEDED).exists():
        raise LocalDBError(f"{old_primary.data} was not replaced by a failover; nothing to rejoin")
    down(old_primary)
    shutil.rmtree(old_primary.data, ignore_errors=True)
    url = standby_up(new_primary, old_primary)
    (old_primary.root / SUPERSEDED).unlink()
    return url


def failover_url(primary: LocalCluster, standby: LocalCluster, database: str = DB_NAME) -> str:
    """The service's URL over both clusters (libpq multi-host, ``target_session_attrs=read-write``): every new
    connection goes to whichever of the two accepts writes, so after a promotion the service reconnects to the
    new primary by itself (503 with Retry-After in between, never a restart)."""
    c, s = primary.credentials(), standby.credentials()
    return (f"postgresql+psycopg://{SERVICE_ROLE}:{c['service_password']}@/{database}"
            f"?host=127.0.0.1,127.0.0.1&port={c['port']},{s['port']}&target_session_attrs=read-write"
            "&connect_timeout=5")


# --- PgBouncer (连接池) in transaction mode in front of the managed cluster --------------------------------------

PGBOUNCER = Path("/usr/sbin/pgbouncer")
#: Server connections PgBouncer keeps per database and user: what hundreds of clients share.
PGBOUNCER_POOL_SIZE = 20
PGBOUNCER_MAX_CLIENTS = 2000


def _pgbouncer_dir(cluster: LocalCluster) -> Path:
    return cluster.root / "pgbouncer"


def pgbouncer_pid(cluster: LocalCluster) -> int | None:
    """The pid of the cluster's PgBouncer when it runs."""
    try:
        pid = int((_pgbouncer_dir(cluster) / "pgbouncer.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if Path(f"/proc/{pid}").exists() and not _is_zombie(pid) else None


def pgbouncer_up(cluster: LocalCluster, pool_size: int = PGBOUNCER_POOL_SIZE,
                 max_clients: int = PGBOUNCER_MAX_CLIENTS, target: LocalCluster | None = None) -> int:
    """Start Debian's PgBouncer in transaction mode in front of the running `cluster` (idempotent); its port.

    Every client transaction borrows one of at most `pool_size` server connections per database and role, so
    thousands of client connections (API processes × their pools, batch workers) share a few server ones.
    Transaction mode keeps nothing of a session between transactions: no LISTEN (the change listener connects
    to the server directly), no server-side prepared statements (psycopg's ``prepare_threshold=None``), no
    session advisory locks or SET (``SET LOCAL`` and transaction-scoped locks are fine). `target`: the server it
    forwards to when not `cluster` itself (the promoted standby after a failover, see `pgbouncer_repoint`)."""
    if not PGBOUNCER.exists():
        raise LocalDBError("PgBouncer is not installed. Run as root: apt-get install -y pgbouncer")
    if pgbouncer_pid(cluster):
        return cluster.credentials()["pgbouncer_port"]
    creds = cluster.credentials()
    if not creds.get("pgbouncer_port") or port_in_use(creds["pgbouncer_port"]):
        creds["pgbouncer_port"] = free_port()
        cluster.credentials_file.write_text(json.dumps(creds))
    folder = _pgbouncer_dir(cluster)
    folder.mkdir(parents=True, exist_ok=True)
    # plain passwords: PgBouncer needs them to log in to the server with SCRAM on the clients' behalf
    users = folder / "userlist.txt"
    users.write_text(f'"{DB_ROLE}" "{creds["password"]}"\n"{SERVICE_ROLE}" "{creds["service_password"]}"\n')
    users.chmod(0o600)
    ini = folder / "pgbouncer.ini"
    ini.write_text(
        "[databases]\n"
        f"* = host=127.0.0.1 port={(target or cluster).credentials()['port']}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {creds['pgbouncer_port']}\nunix_socket_dir = {folder}\n"
        f"auth_type = scram-sha-256\nauth_file = {users}\n"
        f"pidfile = {folder / 'pgbouncer.pid'}\nlogfile = {folder / 'pgbouncer.log'}\n"
        "pool_mode = transaction\n"
        f"default_pool_size = {pool_size}\nmax_client_conn = {max_clients}\n"
        # psycopg and SQLAlchemy send these at connect; PgBouncer would refuse the connection otherwise
        "ignore_startup_parameters = extra_float_digits,options\n"
        "server_lifetime = 3600\nserver_idle_timeout = 60\n"
        "admin_users = gridatlas\nstats_users = gridatlas\n")
    _chown_tree(folder)
    r = _as_owner([str(PGBOUNCER), "-d", "-q", str(ini)])
    if r.returncode != 0:
        raise LocalDBError(f"PgBouncer did not start: {r.stdout}{r.stderr}")
    deadline = time.monotonic() + 15
    while not port_in_use(creds["pgbouncer_port"]):
        if time.monotonic() > deadline:
            log = (folder / "pgbouncer.log").read_text()[-2000:] if (folder / "pgbouncer.log").exists() else ""
            raise LocalDBError(f"PgBouncer did not listen on {creds['pgbouncer_port']}:\n{log}")
        time.sleep(0.1)
    return creds["pgbouncer_port"]


def pgbouncer_down(cluster: LocalCluster, timeout_s: float = 10.0) -> bool:
    """Stop the cluster's PgBouncer (SIGTERM to the pid in its pid file); False when it was not running."""
    import signal

    pid = pgbouncer_pid(cluster)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while pgbouncer_pid(cluster) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pgbouncer_pid(cluster):
        os.kill(pid, signal.SIGKILL)
    return True


def pgbouncer_url(cluster: LocalCluster, database: str = DB_NAME) -> str:
    """The service role's URL through the cluster's PgBouncer (start it first with `pgbouncer_up`)."""
    c = cluster.credentials()
    return f"postgresql+psycopg://{SERVICE_ROLE}:{c['service_password']}@127.0.0.1:{c['pgbouncer_port']}/{database}"


def pgbouncer_repoint(cluster: LocalCluster, target: LocalCluster) -> None:
    """Point the running PgBouncer of `cluster` at `target` (after a failover): the configuration rewritten and
    reloaded (SIGHUP); clients keep their connections to PgBouncer and their next transactions reach `target`."""
    import re
    import signal

    pid = pgbouncer_pid(cluster)
    if pid is None:
        raise LocalDBError(f"no PgBouncer runs for {cluster.data}")
    ini = _pgbouncer_dir(cluster) / "pgbouncer.ini"
    ini.write_text(re.sub(r"(?m)^\* = host=127\.0\.0\.1 port=\d+$",
                          f"* = host=127.0.0.1 port={target.credentials()['port']}", ini.read_text()))
    os.kill(pid, signal.SIGHUP)
