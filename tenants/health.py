"""Tenant health: size, rows per table, version against head and Alembic drift, measured on the
target and stored as a TenantHealth snapshot."""

from __future__ import annotations

import time

from django.conf import settings
from django.db import transaction

from console.pg import sizes
from tenants import databases, migrator
from tenants.models import Tenant, TenantHealth
from tenants.onboarding import names_are_safe, release_revision
from tenants.services import error_text

EXACT_COUNT_MAX_BYTES = 8 * 1024 * 1024  # tables never analyzed, up to this size, are counted


# Health -------------------------------------------------------------------------------------------


def expected_revision(version: str) -> str:
    """The revision a tenant should be at: the release revision (onboarding's: staged revisions
    past it are pending, rolled out on their own), or its own version once a rollout took it past."""
    release = release_revision()
    return version if migrator.reached(version, release) else release


def measure(tenant: Tenant) -> TenantHealth:
    """Size, rows per table, version against head and drift, measured on the target and stored."""
    started = time.perf_counter()
    health = TenantHealth(tenant=tenant, head=migrator.head())
    try:
        names_are_safe(tenant)
        with databases.connect_tenant(tenant, rollback=True, statement_timeout_ms=30000) as conn:
            schema = tenant.schema_name
            health.version = migrator.current_version(conn, schema)
            health.head = expected_revision(health.version)
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
