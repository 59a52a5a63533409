"""Run N GridAtlas API processes behind haproxy on this machine (no Docker): `scripts/cluster N`.

Each process is ``uvicorn --factory api.main:create_app`` on a free loopback port; all share one PostGIS (the
project's local cluster, or ``DATABASE_URL``) and keep their locate index current through the database's change
notifications. haproxy (Debian's) balances round-robin, health-checks ``/readyz`` and sends ``X-Forwarded-For``
(the processes trust it from 127.0.0.1 only). Ctrl+C stops everything. Also imported by tests and benchmarks.

``--standby`` adds a hot standby of the local cluster (pg_basebackup + streaming replication, a second cluster
beside ``var/pg``): the processes read tiles and OGC features from it (``GRIDATLAS_READ_DATABASE_URL``) and write
through a multi-host URL that follows a promotion. The standby outlives the run (stopped, not deleted);
``scripts/cluster standby up|status|failover|rejoin|remove`` manages it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = Path(__file__).with_name("haproxy.cfg.tmpl")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_api(port: int, env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen:
    """One API process on 127.0.0.1:`port` (its output to `log`, else discarded)."""
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 (handed to the child)
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app", "--host", "127.0.0.1",
           "--port", str(port), "--log-level", "warning", "--no-access-log",
           "--no-proxy-headers"]  # the app believes X-Forwarded-* only from GRIDATLAS_TRUSTED_PROXIES (api/proxies.py)
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_ready(url: str, timeout: float = 90.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until GET `url` answers 200 (RuntimeError on timeout or when `proc` exits)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with {proc.returncode} before {url} was ready")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s: {last}")


def haproxy_binary() -> str | None:
    """Debian's haproxy, when installed."""
    return shutil.which("haproxy") or (os.path.exists("/usr/sbin/haproxy") and "/usr/sbin/haproxy") or None


def render_haproxy(front_port: int, api_ports: list[int]) -> str:
    """The haproxy configuration for `api_ports` behind `front_port` (deploy/haproxy.cfg.tmpl)."""
    servers = "\n".join(f"    server api{i + 1} 127.0.0.1:{p} check inter 1s fall 3 rise 1"
                        for i, p in enumerate(api_ports))
    return string.Template(TEMPLATE.read_text()).substitute(FRONT_PORT=front_port, SERVERS=servers,
                                                            ERRORFILE_503=TEMPLATE.with_name("503.http"))


def start_haproxy(front_port: int, api_ports: list[int], workdir: Path) -> subprocess.Popen:
    """haproxy in the foreground (``-db``) with the rendered configuration in `workdir`."""
    binary = haproxy_binary()
    if binary is None:
        raise RuntimeError("haproxy is not installed (Debian: apt-get install haproxy)")
    cfg = workdir / "haproxy.cfg"
    cfg.write_text(render_haproxy(front_port, api_ports))
    check = subprocess.run([binary, "-c", "-q", "-f", str(cfg)], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"haproxy refuses {cfg}: {check.stdout}{check.stderr}")
    log = open(workdir / "haproxy.log", "ab")  # noqa: SIM115 (handed to the child)
    return subprocess.Popen([binary, "-db", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def rss_mb(pid: int) -> float:
    """Resident memory of process `pid` in MiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stop(procs: list[subprocess.Popen], timeout: float = 10.0) -> None:
    """SIGTERM each process (its own session), then SIGKILL what is left after `timeout`."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def prepare_database() -> dict[str, str]:
    """As `gridatlas serve` does before serving: PostGIS up, migrated, demo district in an empty database, the
    first admin; the environment the API processes need (DATABASE_URL for the service role)."""
    sys.path.insert(0, str(ROOT))
    from demo.load import load_demo_if_empty
    from geo.access.users import ensure_first_admin
    from geo.store import db

    admin_url = db.admin_database_url(start_local=True)
    db.migrate(admin_url)
    service_url = db.database_url(start_local=True)
    db.ensure_service_login(admin_url, service_url)
    admin = db.make_engine(admin_url)
    loaded = load_demo_if_empty(admin, scale=float(os.environ.get("GRIDATLAS_DEMO_SCALE", "1")))
    admin.dispose()
    if loaded:
        print(f"demo district loaded: {loaded['counts']}")
    engine = db.make_engine(service_url)
    created = ensure_first_admin(engine)
    engine.dispose()
    if created:
        print(f"first admin created: user {created[0]} password {created[1]} (shown once)")
    return {"DATABASE_URL": service_url}


def local_pair():
    """(primary, standby) LocalClusters of this checkout: ``var/pg`` and its sibling ``var/pg-standby``."""
    sys.path.insert(0, str(ROOT))
    from geo.settings import get_settings
    from geo.store import db, localdb

    if get_settings().database_url:
        raise SystemExit("the standby tooling manages the project's local cluster; DATABASE_URL points elsewhere")
    primary = db.local_cluster()
    return primary, localdb.LocalCluster(localdb.standby_root(primary.root))


def standby_env() -> dict[str, str]:
    """Start the hot standby of the local cluster; the API processes' environment: writes over the multi-host URL
    (whichever cluster accepts writes), lag-tolerant reads on the standby."""
    from geo.store import localdb

    primary, standby = local_pair()
    localdb.standby_up(primary, standby)
    return {"DATABASE_URL": localdb.failover_url(primary, standby),
            "GRIDATLAS_READ_DATABASE_URL": standby.service_url()}


def pgbouncer_env(direct_url: str) -> dict[str, str]:
    """Start PgBouncer (transaction mode) in front of the local primary; the API processes' environment: queries
    through it, LISTEN on `direct_url` (the primary, or the multi-host URL with a standby). PgBouncer outlives
    the run like the clusters (``scripts/cluster pgbouncer down`` stops it)."""
    from geo.store import localdb

    primary, _ = local_pair()
    localdb.pgbouncer_up(primary)
    return {"DATABASE_URL": localdb.pgbouncer_url(primary), "GRIDATLAS_DATABASE_TRANSACTION_POOLING": "1",
            "GRIDATLAS_DIRECT_DATABASE_URL": direct_url}


def pgbouncer_command(argv: list[str]) -> int:
    """`scripts/cluster pgbouncer up|down`: PgBouncer in front of the local primary."""
    from geo.store import localdb

    ap = argparse.ArgumentParser(prog="scripts/cluster pgbouncer")
    ap.add_argument("action", choices=["up", "down"])
    primary, _ = local_pair()
    if ap.parse_args(argv).action == "up":
        print(f"PgBouncer on 127.0.0.1:{localdb.pgbouncer_up(primary)} (transaction mode)")
    else:
        print("stopped" if localdb.pgbouncer_down(primary) else "not running")
    return 0


def standby_command(argv: list[str]) -> int:
    """`scripts/cluster standby up|status|failover|rejoin|remove`: the local cluster's hot standby."""
    from geo.store import localdb

    ap = argparse.ArgumentParser(prog="scripts/cluster standby")
    ap.add_argument("action", choices=["up", "status", "failover", "rejoin", "remove"])
    action = ap.parse_args(argv).action
    primary, standby = local_pair()
    if action == "up":
        localdb.up(primary)
        localdb.standby_up(primary, standby)
    elif action == "failover":  # stop the primary, fence it, promote the standby (and re-point PgBouncer)
        localdb.failover(primary, standby)
        if localdb.pgbouncer_pid(primary):
            localdb.pgbouncer_repoint(primary, standby)
        print(f"promoted {standby.data}; {primary.data} is fenced (rejoin rebuilds it as a standby)")
    elif action == "rejoin":
        # the old primary follows the promoted standby; then a planned switch back (no write is lost: a stopping
        # primary sends its standby everything up to its shutdown checkpoint) restores the usual layout, var/pg
        # the primary and var/pg-standby its standby, which is what `gridatlas db up` and scripts/run expect
        localdb.rejoin(primary, standby)
        localdb.failover(standby, primary)
        if localdb.pgbouncer_pid(primary):
            localdb.pgbouncer_repoint(primary, primary)
        localdb.rejoin(standby, primary)
    elif action == "remove":
        localdb.standby_remove(primary, standby)
    info = {"primary": localdb.status(primary), "standby": localdb.status(standby),
            "standby_is_replica": localdb.is_standby(standby)}
    if localdb.is_running(primary) and not localdb.is_standby(primary):
        info["replication"] = localdb.replication_status(primary.url("postgres"))
    print(json.dumps(info, indent=2, default=str))
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    if argv and argv[0] == "standby":
        return standby_command(argv[1:])
    if argv and argv[0] == "pgbouncer":
        return pgbouncer_command(argv[1:])
    ap = argparse.ArgumentParser(prog="scripts/cluster", description="N API processes behind haproxy")
    ap.add_argument("n", nargs="?", type=int, default=2, help="API processes (default 2)")
    ap.add_argument("--standby", action="store_true", help="reads from a hot standby of the local cluster")
    ap.add_argument("--pgbouncer", action="store_true",
                    help="the processes reach the primary through PgBouncer (transaction mode)")
    args = ap.parse_args(argv)
    n = args.n
    # Ctrl+C, and a plain kill, stop the children too (even when started in the background, where SIGINT is
    # ignored by default).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    front = int(os.environ.get("GRIDATLAS_PORT", "8000"))
    env = prepare_database()
    if args.standby:
        env.update(standby_env())
    if args.pgbouncer:
        env.update(pgbouncer_env(env["DATABASE_URL"]))
    # haproxy connects from loopback: its X-Forwarded-For is believed, nobody else's
    env.setdefault("GRIDATLAS_TRUSTED_PROXIES", os.environ.get("GRIDATLAS_TRUSTED_PROXIES") or "127.0.0.1")
    workdir = Path(tempfile.mkdtemp(prefix="gridatlas-cluster-"))
    procs: list[subprocess.Popen] = []
    try:
        ports = [free_port() for _ in range(n)]
        for port in ports:
            procs.append(start_api(port, env, workdir / f"api-{port}.log"))
        for port, proc in zip(ports, procs, strict=True):
            wait_ready(f"http://127.0.0.1:{port}/readyz", proc=proc)
        procs.append(start_haproxy(front, ports, workdir))
        wait_ready(f"http://127.0.0.1:{front}/readyz", timeout=30)
        for port, proc in zip(ports, procs, strict=False):
            print(f"API process {proc.pid} on 127.0.0.1:{port}  (RSS {rss_mb(proc.pid):.0f} MiB)")
        print(f"GridAtlas: {n} API processes behind haproxy on http://127.0.0.1:{front}  (logs in {workdir}; "
              "Ctrl+C stops)")
        while all(p.poll() is None for p in procs):
            time.sleep(1)
        print("a process exited; stopping the others", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop(procs)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
