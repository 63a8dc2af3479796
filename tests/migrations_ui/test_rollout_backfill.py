"""A rollout's backfill stage runs the backfill engine per tenant (the loop of standalone backfills):
it throttles between batches inside one tenant while replay is paused on the replica and goes on by
itself, a SIGKILLed worker resumes mid-tenant from the checkpoint with every row set once, the grid
shows the tenant's rows; and a stage rolled out to the shared (RLS) schema, once for all its tenants."""

import re

import pytest
from django.conf import settings
from psycopg import sql
from sqlalchemy import text

from console import engines, jobs
from console.models import Job
from console.pg import tenancy
from migrations_ui import rollouts
from migrations_ui.models import RolloutTenant
from tenants import migrator, onboarding
from tenants.models import Tenant
from tests.migrations_ui.test_backfill import _replica_lag_s
from tests.migrations_ui.test_rollouts import _approved_job, _key, _migrate_to
from tests.servers import superuser
from tests.tenants.helpers import onboard, unique_slug
from tests.waiting import wait_for_backend, wait_until

STATUS = "documents_status_add_not_null_column"
EXPECTED = "CASE WHEN deleted_at IS NULL THEN 'active' ELSE 'deleted' END"


@pytest.fixture
def small_batches(worker_with):
    """The session's job worker swapped for one whose backfill engine takes batches of 10 keys,
    records each in the console, allows 1 s of replica lag and retries a throttle after 1 s."""
    return worker_with({
        "BACKFILL_BATCH_INITIAL_ROWS": "10", "BACKFILL_BATCH_MAX_ROWS": "10", "BACKFILL_MAX_REPLICA_LAG_S": "1",
        "BACKFILL_THROTTLE_RETRY_S": "1", "BACKFILL_PROGRESS_INTERVAL_S": "0", "DDL_LOCK_RETRIES": "30",
        "DDL_LOCK_BACKOFF_S": "0.1"})


@pytest.fixture
def at_expand(transactional_db, demo_targets, fleet):
    """make(n, documents): n schema tenants at the expand stage (0004), the first with `documents` rows."""
    made = []

    def make(n, documents):
        tenants = onboard(demo_targets["demo-primary"], *[(unique_slug(f"rb{i}"), f"Backfill {i}") for i in range(n)])
        made.extend(tenants)
        for tenant in tenants:
            _migrate_to(tenant, "0004")
        _documents(tenants[0], documents)
        return tenants

    yield make
    with superuser(fleet) as conn:
        for tenant in made:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(tenant.schema_name)))


def _documents(tenant, rows: int, first_id: int = 1) -> None:
    """Documents first_id.. in the tenant's folder, every fourth deleted; status NULL (expand done)."""
    with engines.connect(tenant.target, credential="change") as conn:
        tenancy.bind(conn, schema=tenant.schema_name, tenant_key=tenant.slug)
        conn.execute(text("INSERT INTO users (id, email, full_name) VALUES (:u, :e, 'A')"),
                     {"u": first_id, "e": f"{tenant.slug}@example.com"})
        folder = conn.execute(text("SELECT id FROM folders WHERE tenant_id = :t LIMIT 1"), {"t": tenant.slug}).scalar_one()
        conn.execute(text("INSERT INTO documents (id, folder_id, owner_id, title, deleted_at) SELECT g, :f, :u,"
                          " 'doc ' || g, CASE WHEN g % 4 = 0 THEN now() END FROM generate_series(CAST(:a AS int), CAST(:b AS int)) g"),
                     {"f": folder, "u": first_id, "a": first_id, "b": first_id + rows - 1})


def _version(tenant, schema=None) -> str:
    with engines.connect(tenant.target, credential="change", rollback=True) as conn:
        return migrator.current_version(conn, schema or tenant.schema_name)


def _statuses(fleet, schema) -> dict:
    """{(status is as specified, status): rows}"""
    with superuser(fleet) as conn:
        return {(ok, status): count for ok, status, count in conn.execute(sql.SQL(
            f"SELECT status IS NOT DISTINCT FROM ({EXPECTED}), status, count(*) FROM {{}} GROUP BY 1, 2").format(
            sql.Identifier(schema, "documents")))}


def _cell(rollout, tenant) -> RolloutTenant:
    return RolloutTenant.objects.select_related("backfill").get(rollout=rollout, key=_key(tenant))


def _locked(fleet, schema, doc_id):
    """A session holding a row lock on one document: the batch that reaches it waits."""
    conn = superuser(fleet)
    conn.execute("BEGIN")
    conn.execute(sql.SQL("SELECT 1 FROM {} WHERE id = %s FOR UPDATE").format(sql.Identifier(schema, "documents")),
                 (doc_id,))
    return conn


def _waiting_batch(fleet, schema):
    with superuser(fleet) as watcher:
        wait_for_backend(watcher, "wait_event_type = 'Lock' AND query LIKE %s", (f'UPDATE "{schema}"."documents"%',),
                         what="the backfill's batch to wait on the locked row", timeout_s=60)


@pytest.mark.worker
def test_it_throttles_a_backfill_stage_between_batches_inside_a_tenant_while_replay_is_paused(
        at_expand, users, fleet, small_batches, client_as):
    first, second = at_expand(2, documents=60)
    schema = first.schema_name
    # Given the canary's second batch held up by a row lock, after its first batch,
    locker = _locked(fleet, schema, 15)
    rollout = rollouts.request(rollouts.staged_change(STATUS), "backfill", users["operator"], canary=_key(first))
    job_id = _approved_job(rollout, users).pk
    replica = superuser(fleet, "replica", "postgres")
    try:
        _waiting_batch(fleet, schema)
        assert _cell(rollout, first).backfill.batches == 1
        # when replay is paused on the replica (more than 1 s behind) and the batch goes through,
        replica.execute("SELECT pg_wal_replay_pause()")
        with superuser(fleet) as writer:
            writer.execute("CREATE TABLE IF NOT EXISTS public.rollout_lag_maker (id int)")

            def lagging():
                writer.execute("INSERT INTO public.rollout_lag_maker VALUES (1)")
                return _replica_lag_s(fleet) > 2

            wait_until(lagging, 30, "the replica to lag more than 2 s", poll_s=0.2)
        locker.commit()
        # then the rollout throttles inside the tenant, between two batches, off its worker, saying why,
        throttled = wait_until(lambda: Job.objects.filter(pk=job_id, state=Job.State.QUEUED,
                                                          wait_reason__contains="replica lag").first(),
                               60, "the rollout to throttle on replica lag")
        assert throttled.wait_reason.startswith(f"{_key(first)}: replica lag: standby")
        assert not throttled.claimed_by and not throttled.error
        cell = _cell(rollout, first)
        assert cell.backfill.rows_done == 20 and cell.backfill.rows_total == 60 and cell.backfill.throttles >= 1
        assert _statuses(fleet, schema) == {(True, "active"): 15, (True, "deleted"): 5, (False, None): 40}
        assert cell.state == "pending" and _version(first) == "0004" and _version(second) == "0004"
        cell_html = re.search(r'<td data-stage="1" data-state="pending">.*?</td>',
                              client_as("viewer").get(rollout.get_absolute_url()).content.decode(), re.S).group(0)
        assert "Waiting" in cell_html and "20/60 rows" in cell_html, cell_html
    finally:
        replica.execute("SELECT pg_wal_replay_resume()")
        replica.close()
        locker.close()
        with superuser(fleet) as conn:
            conn.execute("DROP TABLE IF EXISTS public.rollout_lag_maker")
    # and once replay resumes it goes on by itself to the end, and alembic current agrees.
    job = jobs.wait_for(job_id, timeout_s=60)
    assert job.state == Job.State.SUCCEEDED, (job.state, job.error, job.wait_reason)
    assert _statuses(fleet, schema) == {(True, "active"): 45, (True, "deleted"): 15}
    assert [_version(first), _version(second)] == ["0005", "0005"]
    assert set(RolloutTenant.objects.filter(rollout=rollout).values_list("state", flat=True)) == {"done"}
    assert _cell(rollout, first).backfill.rows_done == 60


@pytest.mark.worker
def test_it_resumes_a_backfill_stage_mid_tenant_from_its_checkpoint_through_a_sigkilled_worker(
        at_expand, users, fleet, small_batches, client_as):
    (tenant,) = at_expand(1, documents=60)
    schema = tenant.schema_name
    # Given a tenant's backfill whose fourth batch waits on a row lock (three batches checkpointed),
    locker = _locked(fleet, schema, 35)
    rollout = rollouts.request(rollouts.staged_change(STATUS), "backfill", users["operator"])
    job_id = _approved_job(rollout, users).pk
    try:
        _waiting_batch(fleet, schema)
        assert _cell(rollout, tenant).backfill.batches == 3
        cell = re.search(r'<td data-stage="1" data-state="running">.*?</td>',
                         client_as("viewer").get(rollout.get_absolute_url()).content.decode(), re.S).group(0)
        assert re.search(r"30/60 rows, [\d,]+ rows/s", cell), cell  # live, on the tenant's grid cell
        # when the worker is SIGKILLed there and another one started,
        small_batches.kill()
    finally:
        locker.close()
    assert _version(tenant) == "0004" and _statuses(fleet, schema)[(False, None)] == 30
    small_batches.start()
    wait_until(lambda: job_id in jobs.reap_stale(), 30, "the reaper to re-queue the rollout", poll_s=0.5)
    job = jobs.wait_for(job_id, timeout_s=60)
    # then it resumed from the checkpoint inside the tenant, every row as specified, each set once
    # (six batches of ten keys, each row last written by exactly one of them), and stamped.
    assert job.state == Job.State.SUCCEEDED, job.error
    assert job.attempts == 2 and any("resuming from checkpoint" in line.message for line in job.log_lines.all())
    assert _statuses(fleet, schema) == {(True, "active"): 45, (True, "deleted"): 15}
    backfill = _cell(rollout, tenant).backfill
    assert backfill.rows_done == backfill.rows_total == 60 and backfill.batches == 6
    with superuser(fleet) as conn:
        writers = conn.execute(sql.SQL("SELECT xmin::text, count(*) FROM {} GROUP BY 1").format(
            sql.Identifier(schema, "documents"))).fetchall()
        progress = conn.execute("SELECT count(*) FROM fleet_console.backfill_progress WHERE backfill = %s",
                                (backfill.spec().key,)).fetchone()[0]
    assert sorted(count for _xmin, count in writers) == [10] * 6
    assert progress == 0, "its progress row on the target is cleaned up"
    assert _version(tenant) == "0005" and Tenant.objects.get(pk=tenant.pk).schema_version == "0005"


def test_it_rolls_a_stage_out_to_the_shared_schema_once_for_all_its_tenants(transactional_db, demo_targets, users,
                                                                         run_here, fleet):
    primary = demo_targets["demo-primary"]
    a, b = onboard(primary, (unique_slug("rsa"), "Shared A", "shared"), (unique_slug("rsb"), "Shared B", "shared"))
    schema = a.schema_name
    try:
        onboarding.migrate_location(primary, None, schema, None, revision="0004")
        Tenant.objects.filter(pk__in=[a.pk, b.pk]).update(schema_version="0004")
        _documents(a, 12, first_id=900_001)
        _documents(b, 8, first_id=900_101)
        # Given two tenants in the shared schema (one migration unit, one version table),
        rollout = rollouts.request(rollouts.staged_change(STATUS), "backfill", users["operator"])
        assert [u["key"] for u in rollout.units] == [f"{primary.name}/shared:{schema}"]
        assert sorted(rollout.units[0]["tenant_ids"]) == sorted([a.pk, b.pk])
        # when the backfill stage is rolled out,
        job = run_here(_approved_job(rollout, users))
        # then it ran once for the schema, alembic current agrees, and each tenant sees the result.
        assert job.state == Job.State.SUCCEEDED, job.error
        assert list(RolloutTenant.objects.filter(rollout=rollout).values_list("state", flat=True)) == ["done"]
        assert _version(a) == "0005"
        assert set(Tenant.objects.filter(pk__in=[a.pk, b.pk]).values_list("schema_version", flat=True)) == {"0005"}
        for tenant, rows in ((a, 12), (b, 8)):
            with engines.connect(primary, credential="change", rollback=True) as conn:
                tenancy.bind(conn, schema=schema, tenant_key=tenant.slug, role=settings.TENANT_APP_ROLE)
                seen = conn.execute(text(f"SELECT status = ({EXPECTED}), count(*) FROM documents GROUP BY 1")).all()
            assert seen == [(True, rows)], tenant.slug
    finally:  # the shared schema outlives the test: back to the release revision, its rows gone
        with superuser(fleet) as conn:
            for table in ("documents", "folders", "users", "tenants"):
                conn.execute(sql.SQL("DELETE FROM {} WHERE tenant_id = ANY(%s)").format(sql.Identifier(schema, table)),
                             ([a.slug, b.slug],))
            conn.execute(sql.SQL("ALTER TABLE {} DROP COLUMN IF EXISTS status").format(
                sql.Identifier(schema, "documents")))
            conn.execute(sql.SQL("UPDATE {} SET version_num = '0003'").format(
                sql.Identifier(schema, "alembic_version")))
