"""docker-compose.yml, Dockerfile and docker/, checked without Docker (there is none to run them).

These tests read the files as compose would: YAML (anchors and merge keys resolved by PyYAML),
then `${VAR:-default}` substitution. No database, no network.
"""

from __future__ import annotations

import ast
import configparser
import ipaddress
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCS = ROOT / "docs" / "deployment.md"

TOPOLOGY = {
    "console-db", "redis", "migrate", "web", "worker", "monitor-worker", "beat",
    "demo-primary", "demo-replica", "demo-bouncer", "demo-scratch",
}
CONSOLE_SERVICES = ("migrate", "web", "worker", "monitor-worker", "beat")
POSTGRES_SERVICES = ("console-db", "demo-primary", "demo-replica", "demo-scratch")

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, $NAME; $$ is a literal $.
SUBSTITUTION = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


# Helpers ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def strings(node):
    """Every string value of a parsed YAML document (compose interpolates values, not keys)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def substitutions(text: str) -> list[tuple[str, str, str | None]]:
    """(name, operator, argument) of each substitution in text; operator '' for a bare one."""
    found = []
    for match in SUBSTITUTION.finditer(text):
        if match["escaped"]:
            continue
        if match["plain"]:
            found.append((match["plain"], "", None))
        else:
            found.append((match["braced"], match["op"] or "", match["arg"]))
    return found


def resolve_defaults(text: str) -> str:
    """text as compose would make it with none of the variables set."""

    def replace(match: re.Match) -> str:
        if match["escaped"]:
            return "$"
        if match["op"] in (":-", "-"):
            return match["arg"]
        return ""

    return SUBSTITUTION.sub(replace, text)


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {key: ("" if value is None else str(value)) for key, value in env.items()}


def depends_on(service: dict) -> dict[str, dict]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: {"condition": "service_started"} for name in deps}
    return deps


def documented(name: str) -> bool:
    return f"`{name}`" in DOCS.read_text()


def settings_env_reads() -> dict[str, object]:
    """Variable name -> literal default of every env()/envbool()/envint()/envfloat() call in
    console/settings.py (None when the default is not a literal)."""
    tree = ast.parse((ROOT / "console" / "settings.py").read_text())
    reads: dict[str, object] = {}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("env", "envbool", "envint", "envfloat")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            default: object = None
            if len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
                default = node.args[1].value
            elif len(node.args) == 1:
                default = {"env": "", "envbool": "false"}.get(node.func.id)
            reads[node.args[0].value] = default
    return reads


def code_env_reads() -> set[str]:
    """Variables the application code reads with os.environ / os.getenv and a literal name."""
    pattern = re.compile(r"""os\.(?:environ\.get|getenv|environ\.setdefault)\(\s*["']([A-Z_][A-Z0-9_]*)["']"""
                         r"""|os\.environ\[\s*["']([A-Z_][A-Z0-9_]*)["']\s*\]""")
    names = set()
    for package in ("console", "tenants", "migrations_ui", "monitors"):
        for path in (ROOT / package).rglob("*.py"):
            for match in pattern.finditer(path.read_text()):
                names.add(match[1] or match[2])
    names.update(re.findall(r"""os\.environ\.setdefault\(\s*["']([A-Z_]+)["']""", (ROOT / "manage.py").read_text()))
    return names


def bind_mounts(service: dict) -> list[tuple[str, str]]:
    """(host path, container path) of the service's bind mounts."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mounts.append((volume["source"], volume["target"]))
            continue
        source, _, rest = volume.partition(":")
        if source.startswith((".", "/", "~")):
            mounts.append((source, rest.split(":")[0]))
    return mounts


def shell_command_containing(script: Path, word: str) -> list[str]:
    """The words of the first command of script that runs word (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", script.read_text())
    for line in text.splitlines():
        if word in line:
            words = shlex.split(line, comments=True)
            if word in words:
                return words
    raise AssertionError(f"{script.name} never runs {word}")


# The topology -----------------------------------------------------------------------------------


def test_it_describes_every_service_of_the_topology(services):
    assert TOPOLOGY <= set(services), f"missing services: {sorted(TOPOLOGY - set(services))}"


def test_it_starts_web_worker_and_beat_only_after_migrate_succeeded(services):
    for name in ("web", "worker", "monitor-worker", "beat"):
        deps = depends_on(services[name])
        assert deps.get("migrate", {}).get("condition") == "service_completed_successfully", name


def test_it_runs_migrations_then_bootstrap_demo_once_per_up(services):
    migrate = services["migrate"]
    command = " ".join(migrate["command"]) if isinstance(migrate["command"], list) else migrate["command"]
    assert re.search(r"manage\.py migrate --noinput && python manage\.py bootstrap_demo\b", command)
    # A one-shot: restarting it would never let the services behind it start.
    assert migrate.get("restart", "no") == "no"
    assert depends_on(migrate)["console-db"]["condition"] == "service_healthy"


def test_it_runs_the_console_processes_from_the_one_console_image(services):
    images = {services[name]["image"] for name in CONSOLE_SERVICES}
    assert len(images) == 1
    for name in CONSOLE_SERVICES:
        build = services[name]["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        assert (ROOT / context).resolve() == ROOT
    assert "gunicorn" in services["web"]["command"] and "console.wsgi" in services["web"]["command"]
    assert services["worker"]["command"][:4] == ["celery", "-A", "console", "worker"]
    # Jobs and monitor work on queues of their own, each with its own worker service.
    assert services["worker"]["command"][-2:] == ["-Q", "jobs"]
    assert services["monitor-worker"]["command"][:4] == ["celery", "-A", "console", "worker"]
    assert services["monitor-worker"]["command"][-2:] == ["-Q", "monitor"]
    assert services["beat"]["command"][:4] == ["celery", "-A", "console", "beat"]


def test_it_waits_only_on_services_that_exist_and_can_report_health(services):
    for name, service in services.items():
        for dependency, spec in depends_on(service).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if spec.get("condition") == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"


def test_it_checks_database_health_with_pg_isready_and_web_on_healthz(services):
    for name in (*POSTGRES_SERVICES, "demo-bouncer"):
        test = services[name]["healthcheck"]["test"]
        assert "pg_isready" in (test if isinstance(test, str) else " ".join(test)), name
    web_check = " ".join(services["web"]["healthcheck"]["test"])
    assert "/healthz" in web_check and ":8000" in web_check
    # The check asks for http://localhost: the console must always answer to that name.
    allowed = resolve_defaults(environment(services["web"])["CONSOLE_ALLOWED_HOSTS"]).split(",")
    assert "localhost" in allowed
    assert environment(services["web"])["CONSOLE_ALLOWED_HOSTS"].endswith(",localhost")


# The demo fleet ---------------------------------------------------------------------------------


def test_it_preloads_pg_stat_statements_on_every_server_and_lets_the_primary_replicate(services):
    for name in POSTGRES_SERVICES:
        command = services[name]["command"]
        assert command[0] == "postgres", name
        assert "shared_preload_libraries=pg_stat_statements" in command, name
    primary = services["demo-primary"]["command"]
    assert "wal_level=replica" in primary
    assert any(arg.startswith("max_wal_senders=") and int(arg.split("=")[1]) > 0 for arg in primary)
    assert "hot_standby=on" in services["demo-replica"]["command"]
    init = (ROOT / "docker" / "primary-init.sh").read_text()
    assert re.search(r"^host\s+replication\s+\S+\s+\S+\s+scram-sha-256\s*$", init, re.M)
    assert "pg_hba.conf" in init


def test_it_makes_the_replica_with_pg_basebackup_dash_r_on_first_start(services):
    replica = services["demo-replica"]
    entrypoint = replica["entrypoint"]
    mounts = dict((target, source) for source, target in bind_mounts(replica))
    script_target = next(arg for arg in entrypoint if arg.endswith(".sh"))
    assert mounts[script_target] == "./docker/replica-entrypoint.sh"
    script = ROOT / "docker" / "replica-entrypoint.sh"
    words = shell_command_containing(script, "pg_basebackup")
    assert "-R" in words or "--write-recovery-conf" in words
    assert "-D" in words and "$PGDATA" in words
    text = script.read_text()
    # Only on an empty volume, and the image's own entrypoint starts the standby afterwards.
    assert 'if [ ! -s "$PGDATA/PG_VERSION" ]' in text
    assert re.search(r'^exec docker-entrypoint\.sh "\$@"\s*$', text, re.M)
    assert depends_on(replica)["demo-primary"]["condition"] == "service_healthy"
    assert environment(replica)["PRIMARY_HOST"] == "demo-primary"


def test_it_puts_pgbouncer_in_transaction_mode_in_front_of_the_primary(services):
    bouncer = services["demo-bouncer"]
    mounts = dict((target, source) for source, target in bind_mounts(bouncer))
    assert mounts["/etc/pgbouncer/pgbouncer.ini"] == "./docker/pgbouncer.ini"
    ini = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=None)
    ini.read(ROOT / "docker" / "pgbouncer.ini")
    assert ini["pgbouncer"]["pool_mode"] == "transaction"
    assert ini["pgbouncer"]["listen_port"] == "5432"
    for database, spec in ini["databases"].items():
        assert "host=demo-primary" in spec.split() and "port=5432" in spec.split(), database
    assert "demo" in ini["databases"]
    # The password file is written from the environment at start; no secret in the ini.
    assert ini["pgbouncer"]["auth_file"] in (ROOT / "docker" / "pgbouncer-entrypoint.sh").read_text()
    assert "FLEET_PG_PASSWORD" in environment(bouncer)


def test_it_registers_the_demo_targets_under_their_service_names(services):
    from console.management.commands.bootstrap_demo import demo_targets

    env = {key: resolve_defaults(value) for key, value in environment(services["migrate"]).items()}
    targets = {spec["name"]: spec for spec in demo_targets(env)}
    assert set(targets) == {"demo-primary", "demo-replica", "demo-bouncer", "demo-scratch"}
    for name, spec in targets.items():
        assert spec["host"] == name and spec["host"] in services
        assert spec["port"] == 5432
    # make up sets no host: loopback, as before.
    ports = {key: "1" for key in env if key.startswith("FLEET_") and key.endswith("_PORT")}
    assert {spec["host"] for spec in demo_targets(ports)} == {"127.0.0.1"}


# Exposure and secrets ---------------------------------------------------------------------------


def test_it_publishes_only_the_web_port_and_on_loopback_unless_told_otherwise(services):
    publishing = {name for name, service in services.items() if service.get("ports")}
    assert publishing == {"web"}
    for name, service in services.items():
        assert service.get("network_mode") != "host", name
    for port in services["web"]["ports"]:
        if isinstance(port, dict):
            raw_ip = str(port.get("host_ip", ""))
        else:
            # HOST_IP:HOST_PORT:CONTAINER_PORT; the IP may be a substitution holding colons itself.
            parts = re.split(r":(?![^{]*\})", str(port))
            assert len(parts) == 3, f"{port!r} publishes on every interface: give a host IP"
            raw_ip = parts[0]
        assert raw_ip, f"{port!r} has no host IP"
        for name, operator, _arg in substitutions(raw_ip):
            assert operator in (":-", "-"), f"{name} needs a default in {port!r}"
        ip = resolve_defaults(raw_ip).strip("[]")
        assert ip and ipaddress.ip_address(ip).is_loopback, f"{port!r} binds {ip!r} by default"


def test_it_hard_codes_no_secret_beyond_marked_demo_defaults(services):
    secret = re.compile(r"PASSWORD|SECRET|(^|_)KEY$")
    for name, service in services.items():
        for key, value in environment(service).items():
            if not secret.search(key):
                continue
            found = substitutions(value)
            assert found or value == "", f"{name}: {key} is hard-coded"
            for _var, operator, arg in found:
                if operator in (":-", "-") and arg:
                    assert "demo" in arg.lower() and "change-me" in arg.lower(), (
                        f"{name}: the default of {key} must be marked as a demo value"
                    )


def test_it_gives_each_variable_one_default_everywhere():
    defaults: dict[str, set[str]] = {}
    for text in strings(yaml.safe_load(COMPOSE_FILE.read_text())):
        for name, operator, arg in substitutions(text):
            assert operator in (":-", "-", ":?", "?"), f"${{{name}}} has no default: it would be empty"
            if operator in (":-", "-"):
                defaults.setdefault(name, set()).add(arg)
    disagreeing = {name: values for name, values in defaults.items() if len(values) > 1}
    assert not disagreeing


def test_it_keeps_the_settings_defaults_for_the_console_variables():
    """A compose default that differs from console/settings.py would silently change the console."""
    deliberate = {
        "CONSOLE_SECRET_KEY",  # demo values, marked as such
        "CONSOLE_FIELD_ENCRYPTION_KEY",
        "CONSOLE_DB_PASSWORD",
        "REDIS_URL",  # the redis service instead of the make up port
    }
    settings_defaults = settings_env_reads()
    for text in strings(yaml.safe_load(COMPOSE_FILE.read_text())):
        for name, operator, arg in substitutions(text):
            if name in deliberate or operator not in (":-", "-") or settings_defaults.get(name) is None:
                continue
            expected = settings_defaults[name]
            if isinstance(expected, (int, float)):
                assert float(arg) == float(expected), name
            else:
                assert arg == expected, name


# Documentation ----------------------------------------------------------------------------------


def test_it_documents_every_variable_the_compose_file_substitutes():
    names = {name for text in strings(yaml.safe_load(COMPOSE_FILE.read_text())) for name, *_ in substitutions(text)}
    assert names
    missing = sorted(name for name in names if not documented(name))
    assert not missing, f"add to docs/deployment.md: {missing}"


def test_it_documents_every_variable_the_console_reads(services):
    names = set(settings_env_reads()) | code_env_reads()
    for name in CONSOLE_SERVICES:
        names |= set(environment(services[name]))
    assert "CONSOLE_SECRET_KEY" in names and "DEMO_PASSWORD" in names
    missing = sorted(name for name in names if not documented(name))
    assert not missing, f"add to docs/deployment.md: {missing}"


# Files ------------------------------------------------------------------------------------------


def test_it_references_only_files_that_exist_in_the_repository(services):
    for name, service in services.items():
        build = service.get("build")
        if build is not None:
            context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            assert context.is_dir(), name
            assert (context / dockerfile).is_file(), name
        for source, target in bind_mounts(service):
            path = (ROOT / source).resolve()
            assert path.is_relative_to(ROOT), f"{name} mounts {source} from outside the repository"
            assert path.exists(), f"{name} mounts {source}, which does not exist"
            if target.startswith("/docker-entrypoint-initdb.d/"):
                # The postgres image runs *.sh, *.sql (and compressed .sql) only.
                assert target.endswith((".sh", ".sql")), f"{name}: {target} would be ignored"


def test_it_ships_shell_scripts_that_parse():
    for script in sorted((ROOT / "docker").glob("*.sh")):
        shebang = script.read_text().splitlines()[0]
        shell = "bash" if "bash" in shebang else "sh"
        result = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script.name}: {result.stderr}"


def test_it_builds_a_non_root_image_with_the_postgres_client():
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert instructions[0] == "FROM python:3.11-slim-bookworm"
    runs = " ".join(line for line in instructions if line.startswith("RUN "))
    assert "postgresql-client" in runs
    assert re.search(r"pip install (--[\w-]+ )*\.(\s|$)", runs)
    assert "manage.py collectstatic --noinput" in runs
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert "PYTHONPATH=/app" in text  # celery imports the project from /app, where BASE_DIR must be
    cmd = next(line for line in instructions if line.startswith("CMD "))
    assert "gunicorn" in cmd and "console.wsgi" in cmd and "0.0.0.0:8000" in cmd
    # Without a .dockerignore, copying the whole context would put .fleet/ (passwords) and .venv/ in.
    if not (ROOT / ".dockerignore").exists():
        for line in instructions:
            if line.startswith(("COPY ", "ADD ")):
                assert not re.match(r"(COPY|ADD)(\s+--\S+)*\s+\./?\s", line), line
