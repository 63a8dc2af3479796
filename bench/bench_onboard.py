"""Onboarding schema tenants: the console's onboarding job against the naive baseline of one
`alembic upgrade head` subprocess per tenant, in the same run, on the same demo primary.

The console's path is the real one: tenants created in the console DB, one `tenants.onboard` job
run by `jobs.execute` (what a worker does), every step of every tenant (validate, CREATE SCHEMA,
Alembic to head in-process with the version table in the tenant's schema, seed, verify, activate),
each checkpointed and logged, TENANT_PARALLELISM tenants at a time on the target's pooled
connections.

The baseline does less work per tenant: CREATE SCHEMA, then `alembic -c
tenants/app_schema/alembic.ini -x schema=... upgrade head` as a subprocess (an interpreter start,
the imports, the revision files read again, a new login), one tenant after the other, as
django-tenants' migrate_schemas does. It is timed on BASELINE_TENANTS tenants, half before and
half after the console's run, and compared per tenant.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from django.conf import settings
from psycopg import sql

from console import engines, jobs
from console.models import Job, Target
from tenants import migrator, onboarding, runners
from tenants.models import Tenant

N_TENANTS = 200
WARMUP_TENANTS = 4
BASELINE_TENANTS = 16  # subprocesses take ~0.6 s each: a sample, compared per tenant
ALEMBIC_INI = Path(settings.BASE_DIR) / "tenants" / "app_schema" / "alembic.ini"


def _onboard(target: Target, prefix: str, count: int) -> float:
    specs = [onboarding.TenantSpec(f"{prefix}_{n:03d}", f"Bench {prefix} {n}") for n in range(count)]
    tenants = onboarding.create_tenants(specs, target)
    job = Job.objects.create(kind=runners.ONBOARD, target=target, params={"tenant_ids": [t.pk for t in tenants]})
    started = time.perf_counter()
    jobs.execute(job.pk)
    elapsed_s = time.perf_counter() - started
    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED, job.error
    assert Tenant.objects.filter(pk__in=[t.pk for t in tenants], state=Tenant.State.ACTIVE).count() == count
    return elapsed_s


def _baseline_one(ctx, schema: str) -> float:
    started = time.perf_counter()
    with psycopg.connect(ctx.conninfo("primary", "demo"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    env = {**os.environ, "PGHOST": ctx.host, "PGPORT": str(ctx.port("primary")), "PGUSER": ctx.superuser,
           "PGPASSWORD": ctx.password, "PGDATABASE": "demo"}
    subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ALEMBIC_INI), "-x", f"schema={schema}", "upgrade",
         onboarding.release_revision()],  # where the console's onboarding goes too (staged revisions pending)
        env=env, check=True, capture_output=True, cwd=settings.BASE_DIR,
    )
    return time.perf_counter() - started


def run(ctx) -> dict[str, float]:
    target = Target.objects.create(
        name="bench-onboard", role=Target.Role.PRIMARY, host=ctx.host, port=ctx.port("primary"), dbname="demo",
        username=ctx.superuser, password_env=ctx.password_env, pool_size=settings.TENANT_PARALLELISM, max_overflow=2,
        # The baseline's alembic runs as the superuser too: the same login on both sides.
        change_username=ctx.superuser, change_password_env=ctx.password_env,
    )
    try:
        _onboard(target, "warm", WARMUP_TENANTS)  # imports, revision map, pool: paid once per worker
        baseline_s = [_baseline_one(ctx, f"tenant_base_{n:03d}") for n in range(BASELINE_TENANTS // 2)]
        console_s = _onboard(target, "bench", N_TENANTS)
        baseline_s += [_baseline_one(ctx, f"tenant_base_{n:03d}") for n in range(BASELINE_TENANTS // 2, BASELINE_TENANTS)]
        with psycopg.connect(ctx.conninfo("primary", "demo")) as conn:
            version = conn.execute(sql.SQL("SELECT version_num FROM {}").format(
                sql.Identifier("tenant_base_000", "alembic_version"))).fetchone()[0]
        assert version == onboarding.release_revision(), "the baseline reached the same revision"
    finally:
        engines.forget(target.pk)

    console_per_tenant_ms = console_s / N_TENANTS * 1000
    baseline_per_tenant_ms = statistics.median(baseline_s) * 1000
    ctx.log(
        f"onboard: {N_TENANTS} schema tenants in {console_s:.2f} s ({console_per_tenant_ms:.1f} ms per tenant, "
        f"parallelism {settings.TENANT_PARALLELISM}); baseline subprocess per tenant: median "
        f"{baseline_per_tenant_ms:.0f} ms (min {min(baseline_s) * 1000:.0f}, max {max(baseline_s) * 1000:.0f}) "
        f"-> {N_TENANTS} tenants in about {baseline_per_tenant_ms * N_TENANTS / 1000:.0f} s"
    )
    return {
        "onboard_200_schema_tenants_s": round(console_s, 2),
        "onboard_per_tenant_ms": round(console_per_tenant_ms, 1),
        "onboard_baseline_subprocess_per_tenant_ms": round(baseline_per_tenant_ms, 1),
        "onboard_vs_subprocess_alembic_ratio": round(baseline_per_tenant_ms / console_per_tenant_ms, 2),
    }
