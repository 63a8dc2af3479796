"""Start and stop a local fleet on loopback: the console's own PostgreSQL, a demo primary with a
streaming replica (pg_basebackup -R), PgBouncer in transaction mode in front of the primary, a
scratch server for restore drills, and Redis. The primary archives its WAL with pgBackRest
(archive-push) into a repository under the fleet's folder, stanza `demo`.

Standard library only, so `make up` and the test suite can both use it before Django is set up.
PostgreSQL and PgBouncer refuse to run as root: they run as an unprivileged system user.
Every step is idempotent: running `up` twice starts only what is not running yet.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
SERVICE_USER = os.environ.get("FLEET_SERVICE_USER", "postgres")
PORT_NAMES = ("console", "primary", "replica", "scratch", "bouncer", "redis")


@dataclass
class Fleet:
    root: str
    base_port: int
    superuser_password: str
    console_password: str
    fast: bool = False
    # The console's two logins on the demo servers: fleet_monitor (pg_monitor, never a superuser)
    # and fleet_owner (owns the demo database and what onboarding creates).
    monitor_password: str = ""
    owner_password: str = ""
    # Where the servers keep their files: the fleet root, unless the unprivileged service user
    # cannot reach it (a checkout under /root, say); then a folder of its own under /var/tmp.
    data_root: str = ""

    def port(self, name: str) -> int:
        return self.base_port + PORT_NAMES.index(name)

    def path(self, *parts: str) -> Path:
        return Path(self.data_root or self.root, *parts)

    def env(self) -> dict[str, str]:
        """What the console's processes need to find this fleet."""
        return {
            "CONSOLE_DB_HOST": "127.0.0.1",
            "CONSOLE_DB_PORT": str(self.port("console")),
            "CONSOLE_DB_NAME": "console",
            "CONSOLE_DB_USER": "console",
            "CONSOLE_DB_PASSWORD": self.console_password,
            "REDIS_URL": f"redis://127.0.0.1:{self.port('redis')}/0",
            "FLEET_PG_PASSWORD": self.superuser_password,
            "FLEET_MONITOR_PASSWORD": self.monitor_password,
            "FLEET_OWNER_PASSWORD": self.owner_password,
            "FLEET_PRIMARY_PORT": str(self.port("primary")),
            "FLEET_REPLICA_PORT": str(self.port("replica")),
            "FLEET_SCRATCH_PORT": str(self.port("scratch")),
            "FLEET_BOUNCER_PORT": str(self.port("bouncer")),
            # pgBackRest's configuration of the primary's stanza, and where PITR drills restore.
            "PGBACKREST_CONFIG": str(pgbackrest_config(self)),
            "PITR_DRILL_DIR": str(self.path("pitr-drills")),
        }


def log(message: str) -> None:
    print(f"[fleet] {message}", flush=True)


def as_service_user(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    if os.geteuid() == 0:
        args = ["runuser", "-u", SERVICE_USER, "--", *args]
    return subprocess.run(args, check=True, **kwargs)


def chown_to_service_user(path: Path) -> None:
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam(SERVICE_USER)
    for folder, _dirs, files in os.walk(path):
        os.chown(folder, entry.pw_uid, entry.pw_gid)
        for name in files:
            os.chown(os.path.join(folder, name), entry.pw_uid, entry.pw_gid)


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_base_port(start: int = 20000, stop: int = 60000) -> int:
    """A base port with len(PORT_NAMES) free ports above it, chosen at random to avoid races."""
    import random

    for _ in range(200):
        base = random.randrange(start, stop, 10)
        if all(port_is_free(base + i) for i in range(len(PORT_NAMES))):
            return base
    raise RuntimeError("no free block of loopback ports found")


def wait_for_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")


# PostgreSQL -----------------------------------------------------------------------------------


def _cluster_conf(fleet: Fleet, name: str) -> str:
    lines = [
        "listen_addresses = '127.0.0.1'",
        f"port = {fleet.port(name)}",
        "unix_socket_directories = ''",
        "shared_preload_libraries = 'pg_stat_statements'",
        "pg_stat_statements.track = all",
        "track_io_timing = on",
        "wal_level = replica",
        "max_wal_senders = 10",
        "hot_standby = on",
        "hot_standby_feedback = on",
        "max_connections = 100",
        "superuser_reserved_connections = 3",
        "shared_buffers = 32MB",
        "logging_collector = off",
        "log_min_duration_statement = 1000",
        "password_encryption = 'scram-sha-256'",
    ]
    if fleet.fast:
        lines += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
    return "\n# fleet console local fleet\n" + "\n".join(lines) + "\n"


HBA = """# fleet console local fleet: TCP on loopback only, passwords required
host    all             all             127.0.0.1/32            scram-sha-256
host    replication     all             127.0.0.1/32            scram-sha-256
"""
# The primary's socket (archiving_settings) is for pgBackRest, which runs as the service user.
LOCAL_HBA = "local   all             postgres                                peer\n"


def _pg_running(datadir: Path) -> bool:
    if not (datadir / "postmaster.pid").exists():
        return False
    args = [str(PG_BIN / "pg_ctl"), "status", "-D", str(datadir)]
    if os.geteuid() == 0:  # pg_ctl refuses to run as root
        args = ["runuser", "-u", SERVICE_USER, "--", *args]
    return subprocess.run(args, capture_output=True, text=True).returncode == 0


def _pg_start(fleet: Fleet, name: str) -> None:
    datadir = fleet.path("pg", name)
    if _pg_running(datadir):
        log(f"{name}: already running on port {fleet.port(name)}")
        return
    logfile = fleet.path("log", f"{name}.log")
    as_service_user(
        [str(PG_BIN / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(datadir), "-l", str(logfile)],
        stdout=subprocess.DEVNULL,
    )
    wait_for_port(fleet.port(name))
    log(f"{name}: started on 127.0.0.1:{fleet.port(name)}")


def _psql(fleet: Fleet, name: str, sql: str, database: str = "postgres") -> str:
    result = subprocess.run(
        [
            str(PG_BIN / "psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
            "-h", "127.0.0.1", "-p", str(fleet.port(name)), "-U", "postgres", "-d", database,
            "-c", sql,
        ],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PGPASSWORD": fleet.superuser_password},
    )
    return result.stdout.strip()


# pgBackRest ---------------------------------------------------------------------------------------

STANZA = "demo"


def pgbackrest_config(fleet: Fleet) -> Path:
    return fleet.path("pgbackrest", "pgbackrest.conf")


def archiving_settings(fleet: Fleet) -> dict[str, str]:
    """The primary's WAL archiving: pgbackrest archive-push, one segment at a time (no async
    spool), into the stanza of pgbackrest_config(). pgBackRest reaches the server through a unix
    socket in a folder only the service user (and root) may enter, with peer authentication."""
    command = f"pgbackrest --config={pgbackrest_config(fleet)} --stanza={STANZA} archive-push %p"
    return {"archive_mode": "on", "archive_command": command, "unix_socket_directories": str(fleet.path("run"))}


def write_pgbackrest_config(fleet: Fleet) -> None:
    folder = fleet.path("pgbackrest")
    for sub in ("repo", "log", "lock", "spool"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(folder / "repo", 0o750)
    # lz4 and one process: archive-push of a 16 MB segment stays in the tens of milliseconds.
    pgbackrest_config(fleet).write_text(f"""# fleet console local fleet: the demo primary's pgBackRest repository
[global]
repo1-path={folder / 'repo'}
repo1-retention-full=2
log-path={folder / 'log'}
lock-path={folder / 'lock'}
spool-path={folder / 'spool'}
archive-async=n
compress-type=lz4
compress-level=1
process-max=1
start-fast=y
log-level-console=warn
log-level-file=info

[{STANZA}]
pg1-path={fleet.path('pg', 'primary')}
pg1-port={fleet.port('primary')}
pg1-socket-path={fleet.path('run')}
pg1-user=postgres
""")
    chown_to_service_user(folder)


def ensure_archiving(fleet: Fleet) -> None:
    """A primary made before archiving existed gets it (ALTER SYSTEM, a restart); then the stanza
    is created, which pgBackRest does only once (it checks an existing one)."""
    run = fleet.path("run")
    run.mkdir(mode=0o700, exist_ok=True)
    chown_to_service_user(run)
    hba = fleet.path("pg", "primary", "pg_hba.conf")
    if LOCAL_HBA not in hba.read_text():
        with open(hba, "a") as handle:
            handle.write(LOCAL_HBA)
        _psql(fleet, "primary", "SELECT pg_reload_conf()")
    wanted = archiving_settings(fleet)
    # A list setting set by ALTER SYSTEM reads back with its element quoted ("/path").
    current = {name: _psql(fleet, "primary", f"SELECT current_setting('{name}')").strip('"') for name in wanted}
    if current != wanted:
        for name, value in wanted.items():
            if current[name] != value:
                _psql(fleet, "primary", f"ALTER SYSTEM SET {name} = '{value}'")
        _pg_stop(fleet, "primary")
        _pg_start(fleet, "primary")
        log("primary: WAL archiving with pgbackrest archive-push turned on")
    as_service_user(["pgbackrest", f"--config={pgbackrest_config(fleet)}", f"--stanza={STANZA}", "stanza-create"],
                    stdout=subprocess.DEVNULL)
    log(f"primary: pgBackRest stanza {STANZA} ready in {fleet.path('pgbackrest', 'repo')}")


def init_cluster(fleet: Fleet, name: str) -> None:
    datadir = fleet.path("pg", name)
    if (datadir / "PG_VERSION").exists():
        return
    pwfile = fleet.path("pg", f".{name}.pw")
    pwfile.write_text(fleet.superuser_password + "\n")
    chown_to_service_user(fleet.path("pg"))
    as_service_user(
        [
            str(PG_BIN / "initdb"), "-D", str(datadir), "-U", "postgres",
            "--auth=scram-sha-256", f"--pwfile={pwfile}", "--encoding=UTF8", "--locale=C.UTF-8",
        ],
        stdout=subprocess.DEVNULL,
    )
    pwfile.unlink()
    with open(datadir / "postgresql.conf", "a") as conf:
        conf.write(_cluster_conf(fleet, name))
        if name == "primary":
            conf.write("".join(f"{key} = '{value}'\n" for key, value in archiving_settings(fleet).items()))
    (datadir / "pg_hba.conf").write_text(HBA + (LOCAL_HBA if name == "primary" else ""))
    chown_to_service_user(datadir)
    log(f"{name}: initialised {datadir}")


def init_replica(fleet: Fleet) -> None:
    datadir = fleet.path("pg", "replica")
    if (datadir / "PG_VERSION").exists():
        return
    fleet.path("pg").mkdir(parents=True, exist_ok=True)
    chown_to_service_user(fleet.path("pg"))
    conninfo = f"host=127.0.0.1 port={fleet.port('primary')} user=postgres application_name=demo-replica"
    # The password travels in the environment, never on a command line; -R still records it in
    # primary_conninfo inside the replica's own data directory.
    env = {**os.environ, "PGPASSWORD": fleet.superuser_password}
    as_service_user(
        [
            str(PG_BIN / "pg_basebackup"), "-d", conninfo, "-D", str(datadir),
            "-R", "-X", "stream", "-c", "fast", "--no-sync" if fleet.fast else "--progress",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    with open(datadir / "postgresql.conf", "a") as conf:
        conf.write(f"\n# the replica's own port\nport = {fleet.port('replica')}\n")
    chown_to_service_user(datadir)
    log("replica: made with pg_basebackup -R from primary")


def setup_databases(fleet: Fleet) -> None:
    """The console's own database and role, and the demo database on the primary."""
    quoted_password = fleet.console_password.replace("'", "''")
    exists = _psql(fleet, "console", "SELECT 1 FROM pg_roles WHERE rolname = 'console'")
    if not exists:
        _psql(fleet, "console", f"CREATE ROLE console LOGIN CREATEDB PASSWORD '{quoted_password}'")
    if not _psql(fleet, "console", "SELECT 1 FROM pg_database WHERE datname = 'console'"):
        _psql(fleet, "console", "CREATE DATABASE console OWNER console")
    for name in ("primary", "scratch"):
        _psql(fleet, name, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        setup_console_roles(fleet, name)
    # Restore drills check each restored copy with pg_amcheck as the change login: amcheck is not a
    # trusted extension, so it comes with every new database (template1), its functions granted.
    _psql(fleet, "scratch", "CREATE EXTENSION IF NOT EXISTS amcheck", database="template1")
    _psql(fleet, "scratch", "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO fleet_owner", database="template1")
    if not _psql(fleet, "primary", "SELECT 1 FROM pg_database WHERE datname = 'demo'"):
        _psql(fleet, "primary", "CREATE DATABASE demo OWNER fleet_owner")
    _psql(fleet, "primary", "ALTER DATABASE demo OWNER TO fleet_owner")
    _psql(fleet, "primary", "CREATE EXTENSION IF NOT EXISTS pg_stat_statements", database="demo")


# What each of the console's logins may do. The monitor role reads statistics and every table
# (EXPLAIN needs it) and signals non-superuser backends; it cannot read server files, run programs
# or change anything. The owner creates tenants' schemas, databases and roles, and sees every row.
CONSOLE_ROLES = {
    "fleet_monitor": ("LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE", "pg_monitor, pg_signal_backend, pg_read_all_data"),
    "fleet_owner": ("LOGIN NOSUPERUSER CREATEDB CREATEROLE BYPASSRLS", None),
}


def setup_console_roles(fleet: Fleet, name: str) -> None:
    """Create (or bring up to date: passwords change with the fleet's) the console's two roles."""
    passwords = {"fleet_monitor": fleet.monitor_password, "fleet_owner": fleet.owner_password}
    for role, (attributes, member_of) in CONSOLE_ROLES.items():
        quoted_password = passwords[role].replace("'", "''")
        if not _psql(fleet, name, f"SELECT 1 FROM pg_roles WHERE rolname = '{role}'"):
            _psql(fleet, name, f"CREATE ROLE {role}")
        _psql(fleet, name, f"ALTER ROLE {role} {attributes} PASSWORD '{quoted_password}'")
        if member_of:
            _psql(fleet, name, f"GRANT {member_of} TO {role}")


PGBENCH_TABLES = ("pgbench_accounts", "pgbench_branches", "pgbench_history", "pgbench_tellers")


def load_demo_data(fleet: Fleet, scale: int = 1) -> None:
    """pgbench's tables, owned by fleet_owner (the console's change credential migrates them)."""
    if _psql(fleet, "primary", "SELECT to_regclass('public.pgbench_accounts') IS NOT NULL", "demo") == "t":
        for table in PGBENCH_TABLES:  # a fleet made before the owner role existed
            _psql(fleet, "primary", f"ALTER TABLE IF EXISTS {table} OWNER TO fleet_owner", "demo")
        return
    subprocess.run(
        [
            str(PG_BIN / "pgbench"), "-i", "-q", "-s", str(scale), "--foreign-keys",
            "-h", "127.0.0.1", "-p", str(fleet.port("primary")), "-U", "fleet_owner", "demo",
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "PGPASSWORD": fleet.owner_password},
    )
    log(f"primary: loaded demo data (pgbench scale {scale}) into database demo")


def _pg_stop(fleet: Fleet, name: str) -> None:
    datadir = fleet.path("pg", name)
    if _pg_running(datadir):
        as_service_user(
            [str(PG_BIN / "pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(datadir)],
            stdout=subprocess.DEVNULL,
        )
        log(f"{name}: stopped")


# PgBouncer and Redis ----------------------------------------------------------------------------


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for a parent (pid 1 of a container may never reap it)."""
    try:
        os.kill(pid, 0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _pid_alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _running(pid) else None


def start_bouncer(fleet: Fleet) -> None:
    folder = fleet.path("bouncer")
    folder.mkdir(parents=True, exist_ok=True)
    pidfile = folder / "pgbouncer.pid"
    userlist = folder / "userlist.txt"
    userlist.write_text(
        f'"postgres" "{fleet.superuser_password}"\n'
        f'"fleet_monitor" "{fleet.monitor_password}"\n'
        f'"fleet_owner" "{fleet.owner_password}"\n'
    )
    os.chmod(userlist, 0o600)
    (folder / "pgbouncer.ini").write_text(
        f"""[databases]
demo = host=127.0.0.1 port={fleet.port('primary')} dbname=demo
postgres = host=127.0.0.1 port={fleet.port('primary')} dbname=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {fleet.port('bouncer')}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {userlist}
admin_users = postgres
stats_users = postgres, fleet_monitor
pool_mode = transaction
default_pool_size = 5
max_client_conn = 200
server_reset_query =
ignore_startup_parameters = extra_float_digits
logfile = {fleet.path('log', 'pgbouncer.log')}
pidfile = {pidfile}
"""
    )
    chown_to_service_user(folder)
    running = _pid_alive(pidfile)
    if running:
        os.kill(running, signal.SIGHUP)  # re-reads its users and settings
        log(f"bouncer: already running on port {fleet.port('bouncer')} (configuration reloaded)")
        return
    as_service_user(["pgbouncer", "-d", str(folder / "pgbouncer.ini")], stdout=subprocess.DEVNULL)
    wait_for_port(fleet.port("bouncer"))
    log(f"bouncer: started on 127.0.0.1:{fleet.port('bouncer')} (transaction pooling)")


def start_redis(fleet: Fleet) -> None:
    folder = fleet.path("redis")
    folder.mkdir(parents=True, exist_ok=True)
    pidfile = folder / "redis.pid"
    if _pid_alive(pidfile):
        log(f"redis: already running on port {fleet.port('redis')}")
        return
    subprocess.run(
        [
            "redis-server", "--bind", "127.0.0.1", "--port", str(fleet.port("redis")),
            "--daemonize", "yes", "--pidfile", str(pidfile), "--dir", str(folder),
            "--logfile", str(fleet.path("log", "redis.log")), "--appendonly", "yes",
            "--save", "",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    wait_for_port(fleet.port("redis"))
    log(f"redis: started on 127.0.0.1:{fleet.port('redis')}")


def _stop_pidfile(pidfile: Path, name: str) -> None:
    pid = _pid_alive(pidfile)
    if not pid:
        return
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        if not _running(pid):
            break
        time.sleep(0.05)
    log(f"{name}: stopped")


# The whole fleet --------------------------------------------------------------------------------


def _reachable_data_root(root: Path) -> str:
    if os.geteuid() != 0:
        return ""
    reachable = subprocess.run(["runuser", "-u", SERVICE_USER, "--", "test", "-x", str(root)]).returncode == 0
    if reachable:
        return ""
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    fallback = Path("/var/tmp", f"fleet-console-{digest}")
    fallback.mkdir(mode=0o755, parents=True, exist_ok=True)
    log(f"{SERVICE_USER} cannot reach {root}: servers keep their files in {fallback}")
    return str(fallback)


def load_or_create(root: str, base_port: int | None, fast: bool = False) -> Fleet:
    state = Path(root, "fleet.json")
    if state.exists():
        fleet = Fleet(**json.loads(state.read_text()))
        if not (fleet.monitor_password and fleet.owner_password):  # made by an older version
            fleet.monitor_password = fleet.monitor_password or secrets.token_urlsafe(18)
            fleet.owner_password = fleet.owner_password or secrets.token_urlsafe(18)
            state.write_text(json.dumps(asdict(fleet), indent=2))
        return fleet
    Path(root).mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    fleet = Fleet(
        data_root=_reachable_data_root(Path(root).resolve()),
        root=str(Path(root).resolve()),
        base_port=base_port or free_base_port(),
        superuser_password=secrets.token_urlsafe(18),
        console_password=secrets.token_urlsafe(18),
        fast=fast,
        monitor_password=secrets.token_urlsafe(18),
        owner_password=secrets.token_urlsafe(18),
    )
    state.write_text(json.dumps(asdict(fleet), indent=2))
    os.chmod(state, 0o600)
    return fleet


def up(fleet: Fleet, demo_data: bool = True) -> Fleet:
    for folder in ("pg", "log"):
        fleet.path(folder).mkdir(parents=True, exist_ok=True)
    chown_to_service_user(fleet.path("pg"))
    chown_to_service_user(fleet.path("log"))
    fleet.path("run").mkdir(mode=0o700, exist_ok=True)
    chown_to_service_user(fleet.path("run"))
    write_pgbackrest_config(fleet)
    for name in ("console", "primary", "scratch"):
        init_cluster(fleet, name)
        _pg_start(fleet, name)
    ensure_archiving(fleet)
    init_replica(fleet)
    _pg_start(fleet, "replica")
    setup_databases(fleet)
    if demo_data:
        load_demo_data(fleet)
    start_bouncer(fleet)
    start_redis(fleet)
    return fleet


def down(fleet: Fleet) -> None:
    _stop_pidfile(fleet.path("redis", "redis.pid"), "redis")
    _stop_pidfile(fleet.path("bouncer", "pgbouncer.pid"), "bouncer")
    for name in ("replica", "primary", "scratch", "console"):
        _pg_stop(fleet, name)


def destroy(fleet: Fleet) -> None:
    down(fleet)
    if fleet.data_root:
        shutil.rmtree(fleet.data_root, ignore_errors=True)
    shutil.rmtree(fleet.root, ignore_errors=True)


def write_env_file(fleet: Fleet, path: Path) -> None:
    lines = [f"{key}={value}" for key, value in fleet.env().items()]
    path.write_text("\n".join(lines) + "\n")
    os.chmod(path, 0o600)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "destroy", "env"])
    parser.add_argument("--root", default=".fleet")
    parser.add_argument("--base-port", type=int, default=None)
    parser.add_argument("--env-file", default=None, help="write the fleet's environment here")
    args = parser.parse_args(argv)
    if args.command != "up" and not Path(args.root, "fleet.json").exists():
        log(f"no fleet under {args.root}")
        return 0
    fleet = load_or_create(args.root, args.base_port)
    if args.command == "up":
        up(fleet)
    elif args.command == "down":
        down(fleet)
    elif args.command == "destroy":
        destroy(fleet)
        return 0
    if args.env_file:
        write_env_file(fleet, Path(args.env_file))
    if args.command == "env":
        for key, value in fleet.env().items():
            print(f"{key}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
