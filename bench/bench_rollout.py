"""A staged NOT NULL change rolled out over 200 schema tenants, the way an operator does it.

The demo application's documents.status (tenants/app_schema/versions 0004-0007: expand, backfill,
validate, contract): each stage requested as a rollout over every active tenant (the canary, the
smallest, alone; then waves of 10 and 50, TENANT_PARALLELISM at a time on the target's pooled
connections), approved by a second user against the digest of its SQL and tenant set, and run as
the `migrations.rollout` job by `jobs.execute` (what a worker does): each tenant one run of the
migrator to the stage's revision (the backfill stage: the backfill engine's batches, checkpointed,
then the revision stamped), its alembic_version moved, a cell and a checkpoint written.

The tenants are onboarded first (to 0003, the staged revisions pending) and given
DOCUMENTS_PER_TENANT documents each, so the backfill has rows to set and VALIDATE rows to read.
Reported: the four stages' job time in total, per tenant (all four stages), and each stage's.
"""

from __future__ import annotations

import time

import psycopg
from django.conf import settings
from django.contrib.auth.models import Group, User
from psycopg import sql

from console import approvals, engines, jobs, roles
from console.models import Job, Target
from migrations_ui import rollouts
from tenants import migrator, onboarding, runners
from tenants.models import Tenant

N_TENANTS = 200
DOCUMENTS_PER_TENANT = 100
WAVES = [10, 50]
CHANGE = "documents_status_add_not_null_column"


def _users() -> tuple[User, User]:
    roles.ensure_groups()
    made = []
    for name in ("bench_operator", "bench_approver"):
        user, _ = User.objects.get_or_create(username=name)
        user.groups.add(Group.objects.get(name=roles.OPERATOR if name.endswith("operator") else roles.APPROVER))
        made.append(user)
    return made[0], made[1]


def _onboard(target: Target) -> list[Tenant]:
    specs = [onboarding.TenantSpec(f"roll_{n:03d}", f"Rollout bench {n}") for n in range(N_TENANTS)]
    tenants = onboarding.create_tenants(specs, target)
    job = Job.objects.create(kind=runners.ONBOARD, target=target, params={"tenant_ids": [t.pk for t in tenants]})
    jobs.execute(job.pk)
    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED, job.error
    return tenants


def _documents(ctx, tenants: list[Tenant]) -> None:
    with psycopg.connect(ctx.conninfo("primary", "demo"), autocommit=True) as conn:
        for tenant in tenants:
            schema = sql.Identifier(tenant.schema_name)
            conn.execute(sql.SQL("INSERT INTO {}.users (id, tenant_id, email, full_name) VALUES (1, %s, 'a@b.c', 'A')")
                         .format(schema), (tenant.slug,))
            conn.execute(sql.SQL(
                "INSERT INTO {s}.documents (id, tenant_id, folder_id, owner_id, title, deleted_at)"
                " SELECT g, %s, (SELECT min(id) FROM {s}.folders), 1, 'doc ' || g,"
                " CASE WHEN g %% 5 = 0 THEN now() END FROM generate_series(1, %s) g").format(s=schema),
                (tenant.slug, DOCUMENTS_PER_TENANT))


def _stage(change, stage: str, operator: User, approver: User) -> tuple[float, Job]:
    rollout = rollouts.request(change, stage, operator, wave_sizes=WAVES, parallelism=settings.TENANT_PARALLELISM)
    approval = approvals.latest(rollouts.ROLLOUT_APPROVAL, rollout)
    approvals.decide(approval, approver, approve=True, shown_digest=approval.digest)
    job = Job.objects.get(rollout=rollout)
    started = time.perf_counter()
    jobs.execute(job.pk)
    elapsed_s = time.perf_counter() - started
    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED, job.error
    return elapsed_s, job


def run(ctx) -> dict[str, float]:
    target = Target.objects.create(
        name="bench-rollout", role=Target.Role.PRIMARY, host=ctx.host, port=ctx.port("primary"), dbname="demo",
        username=ctx.superuser, password_env=ctx.password_env, pool_size=settings.TENANT_PARALLELISM, max_overflow=2,
        change_username=ctx.superuser, change_password_env=ctx.password_env,
    )
    operator, approver = _users()
    try:
        tenants = _onboard(target)
        _documents(ctx, tenants)
        change = rollouts.staged_change(CHANGE)
        stage_s = {}
        for staged in change.revisions:
            stage_s[staged.stage], _job = _stage(change, staged.stage, operator, approver)
        with psycopg.connect(ctx.conninfo("primary", "demo")) as conn:
            versions = {row[0] for row in conn.execute(sql.SQL(" UNION ALL ").join(
                sql.SQL("SELECT version_num FROM {}").format(sql.Identifier(t.schema_name, migrator.VERSION_TABLE))
                for t in tenants))}
            nulls = conn.execute(sql.SQL("SELECT ") + sql.SQL(" + ").join(
                sql.SQL("(SELECT count(*) FROM {} WHERE status IS NULL)").format(sql.Identifier(t.schema_name, "documents"))
                for t in tenants)).fetchone()[0]
        assert versions == {change.revisions[-1].revision} and nulls == 0, (versions, nulls)
    finally:
        engines.forget(target.pk)
    total_s = sum(stage_s.values())
    per_tenant_ms = total_s / N_TENANTS * 1000
    ctx.log(f"rollout: {CHANGE} over {N_TENANTS} schema tenants ({DOCUMENTS_PER_TENANT} documents each), canary + "
            f"waves {WAVES}, {settings.TENANT_PARALLELISM} at a time: {total_s:.2f} s for the four stages "
            f"({per_tenant_ms:.1f} ms per tenant); " + ", ".join(f"{k} {v:.2f} s" for k, v in stage_s.items()))
    return {
        "rollout_200_tenants_s": round(total_s, 2),
        "rollout_per_tenant_ms": round(per_tenant_ms, 1),
        **{f"rollout_{stage}_s": round(seconds, 2) for stage, seconds in stage_s.items()},
    }
