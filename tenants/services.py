"""Tenant work: creating tenants, the onboarding steps, bringing tenants to head, measuring their
health, dumping and dropping them. The SQL is in console/pg/tenancy.py and console/pg/sizes.py;
the migrations are the managed application's, run by tenants/migrator.py.

Every onboarding step is idempotent: it looks at the target before acting, so running it again
(after a killed worker, or a retry) does nothing twice.
"""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection as console_db
from django.db import transaction
from django.utils import timezone

from console import approvals
from console.models import Target
from console.pg import server, sizes, tenancy
from console.secrets import SecretUnavailable, redact
from console.validators import validate_pg_name
from tenants import databases, migrator
from tenants.models import OFFBOARD_APPROVAL, Tenant, TenantHealth, validate_tenant_slug

log = logging.getLogger(__name__)

SHARED_MARKER = "fleet-console shared tenants"
ROOT_FOLDER = "Root"
EXACT_COUNT_MAX_BYTES = 8 * 1024 * 1024  # tables never analyzed, up to this size, are counted


class StepError(Exception):
    """A step cannot go on; the message says why and what to do."""


# Creating tenants (console DB only: nothing reaches a target before the validate step) ----------


@dataclass
class TenantSpec:
    slug: str
    name: str
    strategy: str = Tenant.Strategy.SCHEMA


def check_target(target: Target, strategy: str) -> None:
    if target.role not in (Target.Role.PRIMARY, Target.Role.PGBOUNCER):
        raise ValidationError(f"{target.name} is a {target.get_role_display()}: tenants live on a primary.")
    if strategy == Tenant.Strategy.DATABASE and target.role != Target.Role.PRIMARY:
        raise ValidationError(
            f"{target.name} is a PgBouncer: database-per-tenant needs the primary itself (CREATE DATABASE)."
        )


def create_tenants(specs: list[TenantSpec], target: Target, user=None) -> list[Tenant]:
    """Validate every spec first (all or nothing), then create the tenants as pending."""
    errors = []
    slugs = [spec.slug for spec in specs]
    for spec in specs:
        tenant = Tenant(name=spec.name or spec.slug, slug=spec.slug, target=target, strategy=spec.strategy)
        try:
            tenant.full_clean()
            check_target(target, spec.strategy)
        except ValidationError as exc:
            errors.append(f"{spec.slug!r}: {' '.join(exc.messages)}")
    duplicates = sorted({slug for slug in slugs if slugs.count(slug) > 1})
    if duplicates:
        errors.append(f"listed twice: {', '.join(duplicates)}")
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        return [
            Tenant.objects.create(name=spec.name or spec.slug, slug=spec.slug, target=target,
                                  strategy=spec.strategy, created_by=user if user and user.is_authenticated else None)
            for spec in specs
        ]


# Onboarding steps: each takes the tenant, works on its target, returns what it did ------------


def _names_are_safe(tenant: Tenant) -> None:
    """Everything that becomes an identifier, validated again right before any SQL."""
    validate_tenant_slug(tenant.slug)
    for name in (tenant.schema_name, tenant.database_name, settings.TENANT_APP_ROLE):
        if name is not None:
            validate_pg_name(name)


def step_validate(tenant: Tenant) -> str:
    try:
        _names_are_safe(tenant)
        check_target(tenant.target, tenant.strategy)
        tenant.target.credential("change").password()
    except ValidationError as exc:
        raise StepError(" ".join(exc.messages)) from None
    except SecretUnavailable as exc:
        raise StepError(str(exc)) from None
    return f"slug, strategy and target {tenant.target.name} are fine; tenant goes to {tenant.location}"


def _adoptable(conn, schema: str, found: str | None, wanted: str) -> bool:
    """Ours, or empty: anything else belongs to someone else and is left alone."""
    return found == wanted or (found is not None and not tenancy.tables_in_schema(conn, schema))


def step_provision(tenant: Tenant) -> str:
    if tenant.strategy == Tenant.Strategy.DATABASE:
        return _provision_database(tenant)
    if tenant.strategy == Tenant.Strategy.SHARED:
        return _provision_shared(tenant)
    schema, mark = tenant.schema_name, tenancy.marker(tenant.slug)
    with databases.connect_tenant(tenant) as conn:
        found = tenancy.schema_marker(conn, schema)
        if found == mark:
            return f"schema {schema} already there"
        if found is not None and not _adoptable(conn, schema, found, mark):
            raise StepError(f"schema {schema} exists, holds tables and was not made by the console; "
                            "rename or drop it, or pick another slug")
        tenancy.create_schema(conn, schema, mark)
    return f"created schema {schema}" if found is None else f"adopted empty schema {schema}"


def _provision_database(tenant: Tenant) -> str:
    database, mark = tenant.database_name, tenancy.marker(tenant.slug)
    with databases.connect(tenant.target) as conn:
        found = tenancy.database_marker(conn, database)
    if found == mark:
        return f"database {database} already there"
    if found is None:
        with databases.autocommit(tenant.target) as conn:
            tenancy.create_database(conn, database)
    else:
        with databases.connect_tenant(tenant, rollback=True) as conn:
            if tenancy.tables_in_schema(conn, tenant.schema_name):
                raise StepError(f"database {database} exists, holds tables and was not made by the console; "
                                "rename or drop it, or pick another slug")
    with databases.connect(tenant.target) as conn:
        tenancy.comment_database(conn, database, mark)
    return f"created database {database}" if found is None else f"adopted empty database {database}"


def _provision_shared(tenant: Tenant) -> str:
    """The shared schema at head (made by the first shared tenant), then the tenant's row."""
    schema = tenant.schema_name
    with databases.connect_tenant(tenant) as conn:
        tenancy.lock(conn, f"{schema}:migrate")
        found = tenancy.schema_marker(conn, schema)
        if found is None:
            tenancy.create_schema(conn, schema, SHARED_MARKER)
        elif not _adoptable(conn, schema, found, SHARED_MARKER):
            raise StepError(f"schema {schema} exists and was not made by the console; set TENANT_SHARED_SCHEMA")
    _before, after, _elapsed_ms, _backend = migrate_location(tenant.target, tenant.database_name, schema, tenant.slug)
    with databases.connect_tenant(tenant) as conn:
        tenancy.bind(conn, schema=schema, tenant_key=tenant.slug)
        rows = tenancy.insert_tenant_row(conn, tenant_key=tenant.slug, name=tenant.name)
    made = "created shared schema, " if found is None else ""
    return f"{made}shared schema {schema} at {after}; tenant row {'added' if rows else 'already there'}"


def step_migrate(tenant: Tenant) -> str:
    before, after, elapsed_ms, _backend = migrate_location(tenant.target, tenant.database_name, tenant.schema_name, tenant.slug)
    Tenant.objects.filter(pk=tenant.pk).update(schema_version=after)
    if before == after:
        return f"already at {after}"
    return f"{before or 'empty'} -> {after} in {elapsed_ms:.0f} ms (version table {tenant.schema_name}.{migrator.VERSION_TABLE})"


def migrate_location(target: Target, database: str | None, schema: str, tenant_key: str | None = None,
                     revision: str = "head"):
    """One schema to `revision`, one transaction per revision, in a session of its own serialised
    with anyone else migrating it. Returns the versions before and after, the time taken and the
    server process that did it."""
    started = time.perf_counter()
    timeout_ms = settings.TENANT_MIGRATE_STATEMENT_TIMEOUT_MS
    with databases.session(target, database, statement_timeout_ms=timeout_ms) as conn:
        tenancy.lock_session(conn, f"{schema}:migrate")
        tenancy.bind_session(conn, schema=schema, tenant_key=tenant_key)
        before, after = migrator.upgrade(conn, schema, revision)
        backend = server.backend_pid(conn)
        conn.commit()
    return before, after, (time.perf_counter() - started) * 1000, backend


def step_secure(tenant: Tenant) -> str:
    if tenant.strategy != Tenant.Strategy.SHARED:
        return f"nothing to do: a {tenant.get_strategy_display().lower()} is isolated by its {tenant.location.split()[0]}"
    schema, role = tenant.schema_name, settings.TENANT_APP_ROLE
    done = []
    with databases.connect_tenant(tenant) as conn:
        tenancy.lock(conn, f"{schema}:secure")
        if tenancy.ensure_role(conn, role):
            done.append(f"role {role}")
        status = tenancy.rls_status(conn, schema)
        for table in migrator.table_names():
            changed = tenancy.secure_table(conn, schema, table, status.get(table))
            if changed:
                done.append(f"{table} ({', '.join(changed)})")
        tenancy.grant_application_role(conn, schema, role)
    if not done:
        return f"row-level security already enabled and forced on {schema}, policies in place"
    return "made " + "; ".join(done)


def step_seed(tenant: Tenant) -> str:
    with databases.connect_tenant(tenant) as conn:
        tenancy.bind(conn, schema=tenant.schema_name, tenant_key=tenant.slug)
        tenancy.insert_tenant_row(conn, tenant_key=tenant.slug, name=tenant.name)
        folders = tenancy.insert_root_folder(conn, tenant_key=tenant.slug, name=ROOT_FOLDER)
    return "root folder created" if folders else "root folder already there"


def step_verify(tenant: Tenant) -> str:
    schema, head = tenant.schema_name, migrator.head()
    shared = tenant.strategy == Tenant.Strategy.SHARED
    with databases.connect_tenant(tenant, rollback=True) as conn:
        missing = sorted(set(migrator.table_names()) - set(tenancy.tables_in_schema(conn, schema)))
        if missing:
            raise StepError(f"tables missing in {schema}: {', '.join(missing)}")
        version = migrator.current_version(conn, schema)
        if version != head:
            raise StepError(f"{schema} is at {version or 'no version'}, head is {head}")
        tenancy.bind(conn, schema=schema, tenant_key=tenant.slug, role=settings.TENANT_APP_ROLE if shared else None)
        visible = tenancy.scoped_root_folders(conn)
    if visible != 1:
        raise StepError(f"a query bound to {tenant.slug} sees {visible} root folders, expected exactly 1")
    if shared:
        with databases.connect_tenant(tenant, rollback=True) as conn:
            tenancy.bind(conn, schema=schema, tenant_key=None, role=settings.TENANT_APP_ROLE)
            unbound = tenancy.scoped_root_folders(conn)
        if unbound:
            raise StepError(f"a query with no tenant set sees {unbound} rows: row-level security is not in force")
    return f"tables present, version {version} = head, a tenant-scoped query sees its root folder only"


def step_activate(tenant: Tenant) -> str:
    return "active"


STEP_FUNCTIONS = {
    "validate": step_validate,
    "provision": step_provision,
    "migrate": step_migrate,
    "secure": step_secure,
    "seed": step_seed,
    "verify": step_verify,
    "activate": step_activate,
}
assert tuple(STEP_FUNCTIONS) == Tenant.STEPS


def error_text(tenant: Tenant, exc: Exception) -> str:
    """What went wrong, one line, never with a password in it."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    orig = getattr(exc, "orig", None)
    if orig is not None and str(orig).strip():
        message = str(orig).strip().splitlines()[0]
    return redact(message, *tenant.target.known_passwords())[:1000]


# Bounded parallelism -----------------------------------------------------------------------------


def run_bounded(items: list, work, parallelism: int) -> list:
    """work(item) for every item on at most `parallelism` threads, each keeping its own pooled
    target connection and console DB connection for all its items. An exception that escapes
    `work` stops handing out items and is raised here once the threads are done."""
    parallelism = max(1, min(parallelism, len(items)))
    if parallelism == 1:
        return [work(item) for item in items]
    pending: queue.SimpleQueue = queue.SimpleQueue()
    for item in items:
        pending.put(item)
    results, errors = [], []
    stop = threading.Event()

    def worker():
        try:
            while not stop.is_set():
                try:
                    item = pending.get_nowait()
                except queue.Empty:
                    return
                try:
                    results.append(work(item))
                except BaseException as exc:  # noqa: BLE001  (re-raised in the caller's thread)
                    errors.append(exc)
                    stop.set()
        finally:
            console_db.close()

    threads = [threading.Thread(target=worker, name=f"tenants-{n}") for n in range(parallelism)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def parallelism_for(target: Target) -> int:
    """Never more threads than the target's pool can serve without waiting."""
    return max(1, min(settings.TENANT_PARALLELISM, target.pool_size + target.max_overflow))


# Health -------------------------------------------------------------------------------------------


def measure(tenant: Tenant) -> TenantHealth:
    """Size, rows per table, version against head and drift, measured on the target and stored."""
    started = time.perf_counter()
    health = TenantHealth(tenant=tenant, head=migrator.head())
    try:
        _names_are_safe(tenant)
        with databases.connect_tenant(tenant, rollback=True, statement_timeout_ms=30000) as conn:
            schema = tenant.schema_name
            health.version = migrator.current_version(conn, schema)
            tables = sizes.tables(conn, schema)
            tables = [t for t in tables if t["table_name"] != migrator.VERSION_TABLE]
            for table in tables:
                if not table.pop("analyzed") and table["total_bytes"] <= EXACT_COUNT_MAX_BYTES:
                    table["rows_estimate"] = sizes.exact_rows(conn, schema, table["table_name"])
            if tenant.strategy == Tenant.Strategy.SHARED:
                tables = _tenant_share(conn, schema, tenant.slug, tables)
                health.size_bytes = sum(t["total_bytes"] for t in tables)
            elif tenant.strategy == Tenant.Strategy.DATABASE:
                health.size_bytes = sizes.database_bytes(conn, tenant.database_name)
            else:
                health.size_bytes = sum(t["total_bytes"] for t in tables)
            health.tables = tables
            health.drift = migrator.drift(conn, schema)
            health.drift_count = len(health.drift)
    except Exception as exc:  # noqa: BLE001  (a failed measurement is itself a health fact)
        health.ok = False
        health.error = error_text(tenant, exc)
    health.duration_ms = round((time.perf_counter() - started) * 1000, 1)
    with transaction.atomic():
        health.save()
        Tenant.objects.filter(pk=tenant.pk).update(
            last_health=health, **({"schema_version": health.version} if health.ok else {})
        )
        stale = TenantHealth.objects.filter(tenant=tenant).order_by("-measured_at", "-id")[settings.TENANT_HEALTH_KEEP:]
        TenantHealth.objects.filter(pk__in=list(stale.values_list("pk", flat=True))).delete()
    return health


def _tenant_share(conn, schema: str, tenant_key: str, tables: list[dict]) -> list[dict]:
    """In a shared schema a tenant owns some rows of each table: count them, and estimate their
    bytes as the same share of the table's size."""
    shared = []
    for table in tables:
        if table["table_name"] not in migrator.table_names():
            continue
        rows = sizes.tenant_rows(conn, schema, table["table_name"], tenant_key)
        all_rows = max(table["rows_estimate"], rows, 1)
        shared.append({**table, "rows_estimate": rows, "total_bytes": int(table["total_bytes"] * rows / all_rows)})
    return shared


# Offboarding ---------------------------------------------------------------------------------------


def offboarding_shown(tenant: Tenant, dump_dir: str | None = None) -> dict:
    """Exactly what the approver of this tenant's offboarding is shown; the job compares it again
    right before it drops, so a tenant that changed in between (moved, renamed, migrated to another
    version) is not dropped on an old approval. Row counts and sizes are not part of it: a tenant
    in use changes them every minute, and each health measurement would void the request; the
    tenant page shows them beside the approval."""
    health = Tenant.objects.select_related("last_health").get(pk=tenant.pk).last_health
    measured = {"version": health.version} if health is not None and health.ok else None
    target = tenant.target
    return {
        "action": "dump, then drop",
        "tenant": tenant.slug,
        "name": tenant.name,
        "strategy": tenant.strategy,
        "target": target.name,
        "server": f"{target.host}:{target.port}/{target.dbname}",
        "location": tenant.location,
        "dump_dir": str(dump_dir or settings.TENANT_DUMP_DIR),
        "measured": measured,
    }


def request_offboarding(tenant: Tenant, user, http_request=None):
    shown = offboarding_shown(tenant)
    summary = (f"Offboard tenant {tenant.slug} ({tenant.name}) on {tenant.target.name}: dump {tenant.location} "
               f"into {shown['dump_dir']}, then drop it.")
    return approvals.request(OFFBOARD_APPROVAL, tenant, shown, summary, user, http_request=http_request)


def start_offboarding(approval) -> None:
    """Once approved, in the transaction of the decision: the tenant is offboarding, a job dumps it
    where the approver was shown, then drops it."""
    from console import jobs
    from tenants import runners

    tenant = Tenant.objects.select_related("target").get(pk=approval.object_id)
    if not Tenant.objects.filter(pk=tenant.pk, state=Tenant.State.ACTIVE).update(state=Tenant.State.OFFBOARDING):
        raise approvals.ApprovalRefused(f"{tenant.slug} is {tenant.get_state_display().lower()}, no longer active",
                                        void=True)
    jobs.create(runners.OFFBOARD, user=approval.decided_by, target=tenant.target, tenant=tenant, total=3,
                params={"tenant_id": tenant.pk, "dump_dir": approval.shown["dump_dir"], "approval": approval.pk})


approvals.register(OFFBOARD_APPROVAL, model=Tenant, shown=offboarding_shown, on_approved=start_offboarding)


def dump(tenant: Tenant, folder: str | None = None) -> Path:
    """Write the tenant's dump into `folder` (TENANT_DUMP_DIR by default) and return its path. The
    file appears under its final name only once complete."""
    folder = Path(folder or settings.TENANT_DUMP_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    if tenant.strategy == Tenant.Strategy.SHARED:
        path = folder / f"{tenant.slug}-{stamp}.sql"
        partial = path.with_name(path.name + ".partial")
        _dump_shared_rows(tenant, partial)
    else:
        path = folder / f"{tenant.slug}-{stamp}.dump"
        partial = path.with_name(path.name + ".partial")
        _pg_dump(tenant, partial)
    os.replace(partial, path)
    return path


def _pg_dump(tenant: Tenant, out: Path) -> None:
    # pg_dump needs a session of its own (a snapshot): never through PgBouncer's transaction pool.
    source = tenant.target.upstream if tenant.target.behind_pgbouncer and tenant.target.upstream else tenant.target
    args = [
        settings.TENANT_PG_DUMP, "--format=custom", "--no-password",
        "--host", source.host, "--port", str(source.port), "--username", source.credential("change").username,
        "--dbname", tenant.database_name or source.dbname, "--file", str(out),
    ]
    if tenant.strategy == Tenant.Strategy.SCHEMA:
        args += ["--schema", tenant.schema_name]
    password = source.credential("change").password()
    env = {**os.environ, "PGCONNECT_TIMEOUT": str(source.connect_timeout_s)}
    if password:
        env["PGPASSWORD"] = password  # the environment, never the command line
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        out.unlink(missing_ok=True)
        raise StepError(f"pg_dump failed: {redact(result.stderr.strip()[-800:], password)}")


def _dump_shared_rows(tenant: Tenant, out: Path) -> None:
    """The tenant's rows of every shared table as a psql script of COPY blocks, parents first, read
    in one transaction (one snapshot) bound to the tenant."""
    schema = tenant.schema_name
    with databases.connect_tenant(tenant, rollback=True, statement_timeout_ms=600000,
                                  isolation_level="REPEATABLE READ") as conn, open(out, "wb") as file:
        tenancy.bind(conn, schema=schema, tenant_key=tenant.slug, role=settings.TENANT_APP_ROLE)
        file.write(f"-- Fleet Console: rows of tenant {tenant.slug} in shared schema {schema}\n".encode())
        for table in migrator.metadata().sorted_tables:
            columns = [column.name for column in table.columns]
            file.write(tenancy.copy_header(conn, schema, table.name, columns).encode())
            tenancy.copy_tenant_rows(conn, schema, table.name, columns, file)
            file.write(b"\\.\n\n")


def drop(tenant: Tenant) -> str:
    _names_are_safe(tenant)
    if tenant.strategy == Tenant.Strategy.DATABASE:
        databases.forget(tenant.target.pk, tenant.database_name)
        with databases.connect(tenant.target) as conn:
            found = tenancy.database_marker(conn, tenant.database_name)
        if found is None:
            return f"database {tenant.database_name} already gone"
        if found != tenancy.marker(tenant.slug):
            raise StepError(f"database {tenant.database_name} does not carry this tenant's marker; not dropping it")
        with databases.autocommit(tenant.target) as conn:
            tenancy.drop_database(conn, tenant.database_name)
        return f"dropped database {tenant.database_name}"
    if tenant.strategy == Tenant.Strategy.SHARED:
        with databases.connect_tenant(tenant, statement_timeout_ms=600000) as conn:
            tables = list(reversed(migrator.table_names()))
            deleted = tenancy.delete_tenant_rows(conn, tenant.schema_name, tables, tenant.slug)
        return "deleted rows: " + ", ".join(f"{table} {count}" for table, count in deleted.items())
    with databases.connect_tenant(tenant, statement_timeout_ms=600000) as conn:
        found = tenancy.schema_marker(conn, tenant.schema_name)
        if found is None:
            return f"schema {tenant.schema_name} already gone"
        if found != tenancy.marker(tenant.slug):
            raise StepError(f"schema {tenant.schema_name} does not carry this tenant's marker; not dropping it")
        tenancy.drop_schema(conn, tenant.schema_name)
    return f"dropped schema {tenant.schema_name}"


def start_onboarding(tenants: list[Tenant], user=None, pause_s: float = 0):
    """One onboarding job for these (already created, pending) tenants of one target."""
    from console import jobs
    from tenants import runners

    single = tenants[0] if len(tenants) == 1 else None
    params = {"tenant_ids": [t.pk for t in tenants], "measure_after": True}
    if pause_s:
        params["pause_s"] = pause_s
    return jobs.create(runners.ONBOARD, user=user, target=tenants[0].target, tenant=single,
                       total=len(tenants) * len(Tenant.STEPS), params=params)
