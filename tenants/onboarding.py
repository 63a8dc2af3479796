"""Onboarding: creating tenants, then the steps a job runs for each (validate, provision, migrate,
secure, seed, verify, activate), and bringing a tenant's schema to a revision.

Every step is idempotent: it looks at the target before acting, so running it again (after a
killed worker, or a retry) does nothing twice. The SQL is in console/pg/tenancy.py; the
migrations are the managed application's, run by tenants/migrator.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from console import jobs
from console.models import Target
from console.pg import server, tenancy
from console.secrets import SecretUnavailable
from console.validators import validate_pg_name
from tenants import databases, migrator
from tenants.models import ONBOARD, Tenant, validate_tenant_slug
from tenants.services import StepError

SHARED_MARKER = "fleet-console shared tenants"
ROOT_FOLDER = "Root"


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


def names_are_safe(tenant: Tenant) -> None:
    """Everything that becomes an identifier, validated again right before any SQL."""
    validate_tenant_slug(tenant.slug)
    for name in (tenant.schema_name, tenant.database_name, settings.TENANT_APP_ROLE):
        if name is not None:
            validate_pg_name(name)


def step_validate(tenant: Tenant) -> str:
    try:
        names_are_safe(tenant)
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
    _before, after, _elapsed_ms, _backend = migrate_location(tenant.target, tenant.database_name, schema, tenant.slug,
                                                             revision=release_revision())
    with databases.connect_tenant(tenant) as conn:
        tenancy.bind(conn, schema=schema, tenant_key=tenant.slug)
        rows = tenancy.insert_tenant_row(conn, tenant_key=tenant.slug, name=tenant.name)
    made = "created shared schema, " if found is None else ""
    return f"{made}shared schema {schema} at {after}; tenant row {'added' if rows else 'already there'}"


def release_revision() -> str:
    """Where onboarding and "migrate all" take a schema without anyone's approval: up to the first
    staged revision of the application not yet rolled out everywhere (migrations_ui/rollouts.py);
    the staged ones after it are pending, each rolled out on its own after its approval."""
    from migrations_ui.rollouts import rolled_out_revisions

    return migrator.release_revision(rolled_out_revisions())


def step_migrate(tenant: Tenant) -> str:
    before, after, elapsed_ms, _backend = migrate_location(tenant.target, tenant.database_name, tenant.schema_name,
                                                           tenant.slug, revision=release_revision())
    Tenant.objects.filter(pk=tenant.pk).update(schema_version=after)
    if before == after:
        return f"already at {after}"
    return f"{before or 'empty'} -> {after} in {elapsed_ms:.0f} ms (version table {tenant.schema_name}.{migrator.VERSION_TABLE})"


def migrate_location(target: Target, database: str | None, schema: str, tenant_key: str | None = None,
                     revision: str = "head", expected_from: str | None = None):
    """One schema to `revision`, one transaction per revision, in a session of its own serialised
    with anyone else migrating it. Returns the versions before and after, the time taken and the
    server process that did it."""
    started = time.perf_counter()
    timeout_ms = settings.TENANT_MIGRATE_STATEMENT_TIMEOUT_MS
    with databases.session(target, database, statement_timeout_ms=timeout_ms) as conn:
        tenancy.lock_session(conn, f"{schema}:migrate")
        tenancy.bind_session(conn, schema=schema, tenant_key=tenant_key)
        before, after = migrator.upgrade(conn, schema, revision, expected_from)
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
    schema, release = tenant.schema_name, release_revision()
    shared = tenant.strategy == Tenant.Strategy.SHARED
    with databases.connect_tenant(tenant, rollback=True) as conn:
        missing = sorted(set(migrator.table_names()) - set(tenancy.tables_in_schema(conn, schema)))
        if missing:
            raise StepError(f"tables missing in {schema}: {', '.join(missing)}")
        version = migrator.current_version(conn, schema)
        if not migrator.reached(version, release):
            raise StepError(f"{schema} is at {version or 'no version'}, onboarding takes it to {release}")
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
    return f"tables present, version {version}, a tenant-scoped query sees its root folder only"


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


def start_onboarding(tenants: list[Tenant], user=None, pause_s: float = 0, send: bool = True):
    """One onboarding job for these (already created, pending) tenants of one target."""
    single = tenants[0] if len(tenants) == 1 else None
    params = {"tenant_ids": [t.pk for t in tenants], "measure_after": True}
    if pause_s:
        params["pause_s"] = pause_s
    return jobs.create(ONBOARD, user=user, target=tenants[0].target, tenant=single,
                       total=len(tenants) * len(Tenant.STEPS), params=params, send=send)
