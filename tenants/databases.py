"""The one way tenant code reaches a tenant: its own database (database per tenant) or its
target's database, always with the target's change credential (tenant work changes schema and
data; the monitor role could not). Engines for tenant databases come from the console's engine registry, keyed
by target and database, so they share its pooling, timeouts, fork handling and metrics."""

from __future__ import annotations

from console import engines


def connect(target, database: str | None = None, **options):
    """engines.connect into `database` on the target's server (the target's own when None)."""
    return engines.connect(target, credential="change", database=database, **options)


def connect_tenant(tenant, **options):
    """A transaction where the tenant lives: its own database, or its target's."""
    return engines.connect(tenant.target, credential="change", database=tenant.database_name, **options)


def autocommit(target, database: str | None = None, **options):
    return engines.autocommit(target, credential="change", database=database, **options)


def session(target, database: str | None = None, **options):
    """A session of its own (one transaction per migration revision), outside PgBouncer."""
    return engines.session(target, credential="change", database=database, **options)


forget = engines.forget
