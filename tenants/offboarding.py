"""Offboarding: asked for and approved through console.approvals (four eyes, bound to exactly what
the approver was shown), then a job dumps the tenant and drops it."""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from console import approvals, jobs
from console.pg import dump as pg_dump, tenancy
from tenants import databases, migrator
from tenants.models import OFFBOARD, OFFBOARD_APPROVAL, Tenant
from tenants.onboarding import names_are_safe
from tenants.services import StepError


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
    tenant = Tenant.objects.select_related("target").get(pk=approval.object_id)
    if not Tenant.objects.filter(pk=tenant.pk, state=Tenant.State.ACTIVE).update(state=Tenant.State.OFFBOARDING):
        raise approvals.ApprovalRefused(f"{tenant.slug} is {tenant.get_state_display().lower()}, no longer active",
                                        void=True)
    jobs.create(OFFBOARD, user=approval.decided_by, target=tenant.target, tenant=tenant, total=3,
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
    schema = tenant.schema_name if tenant.strategy == Tenant.Strategy.SCHEMA else None
    try:
        pg_dump.pg_dump(tenant.target, out, database=tenant.database_name, schema=schema)
    except pg_dump.DumpFailed as exc:
        raise StepError(str(exc)) from None


def _dump_shared_rows(tenant: Tenant, out: Path) -> None:
    """The tenant's rows of every shared table as a psql script of COPY blocks, parents first, read
    in one transaction (one snapshot) bound to the tenant."""
    schema = tenant.schema_name
    with databases.connect_tenant(tenant, rollback=True, statement_timeout_ms=600000,
                                  isolation_level="REPEATABLE READ") as conn, open(out, "wb") as file:
        tenancy.bind(conn, schema=schema, tenant_key=tenant.slug, role=settings.TENANT_APP_ROLE)
        file.write(f"-- Fleet Console: rows of tenant {tenant.slug} in shared schema {schema}\n".encode())
        for table, columns in migrator.columns_at(migrator.current_version(conn, schema)):
            file.write(tenancy.copy_header(conn, schema, table, columns).encode())
            tenancy.copy_tenant_rows(conn, schema, table, columns, file)
            file.write(b"\\.\n\n")


def drop(tenant: Tenant) -> str:
    names_are_safe(tenant)
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
