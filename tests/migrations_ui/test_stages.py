"""An approved stage of a console-authored change runs as a job: the approval is used right
before the first statement (a changed plan is refused), each operation runs under lock_timeout
and is skipped when done, the backfill stage runs the backfill engine."""

import pytest
from django.db import transaction

from console import approvals
from console.models import Approval, Job
from migrations_ui import changes
from tests.pg.test_ddl import _column, _constraints, fresh_registry, table  # noqa: F401  (fixtures)
from tests.servers import superuser


def _approve_and_run(change, stage, users, run_here):
    approval = changes.request_stage_approval(change, stage, users["operator"])
    approvals.decide(approval, users["approver"], approve=True, shown_digest=approval.digest)
    job = run_here(Job.objects.get(kind=changes.STAGE_JOB, params__approval=approval.pk))
    return job, Approval.objects.get(pk=approval.pk)


def test_it_runs_each_approved_stage_of_a_not_null_column_to_the_end(transactional_db, demo_targets, users, table,
                                                                      run_here, fleet):
    name = table("stage_items", rows=500)
    change = changes.create(user=users["operator"], target=demo_targets["demo-primary"], kind="add_not_null_column",
                            table=name, column="flag", column_type="boolean", backfill_expression="id % 2 = 0",
                            pk_column="id")
    job, approval = _approve_and_run(change, "expand", users, run_here)
    assert job.state == Job.State.SUCCEEDED, job.error
    assert approval.decision == Approval.Decision.USED
    assert _column(fleet, name, "flag") == (False, "boolean")

    job, _ = _approve_and_run(change, "backfill", users, run_here)
    assert job.state == Job.State.SUCCEEDED and job.result["rows"] == 500, job.error
    with superuser(fleet) as conn:
        assert conn.execute(f"SELECT count(*) FROM {name} WHERE flag IS NULL").fetchone()[0] == 0
        assert conn.execute(f"SELECT count(*) FROM {name} WHERE flag").fetchone()[0] == 250

    job, _ = _approve_and_run(change, "validate", users, run_here)
    assert job.state == Job.State.SUCCEEDED, job.error
    assert _constraints(fleet, name)[change.check_name] is True

    job, _ = _approve_and_run(change, "contract", users, run_here)
    assert job.state == Job.State.SUCCEEDED, job.error
    assert _column(fleet, name, "flag") == (True, "boolean") and change.check_name not in _constraints(fleet, name)
    # Each operation looked at the catalog first: a second run of a stage does nothing twice.
    job, _ = _approve_and_run(change, "contract", users, run_here)
    assert job.state == Job.State.SUCCEEDED and all(o.endswith("already done") for o in job.result["outcomes"])


def test_it_refuses_to_run_a_stage_whose_sql_changed_after_the_approval(transactional_db, demo_targets, users, table,
                                                                        run_here, fleet):
    name = table("stage_moved", rows=10)
    change = changes.create(user=users["operator"], target=demo_targets["demo-primary"], kind="add_not_null_column",
                            table=name, column="flag", column_type="boolean", backfill_expression="true",
                            pk_column="id")
    approval = changes.request_stage_approval(change, "expand", users["operator"])
    with transaction.atomic():  # approved, and the change is edited before its job gets to run
        approvals.decide(approval, users["approver"], approve=True, shown_digest=approval.digest)
        type(change).objects.filter(pk=change.pk).update(column_type="integer")
    job = run_here(Job.objects.get(kind=changes.STAGE_JOB, params__approval=approval.pk))
    assert job.state == Job.State.FAILED and "not what was approved" in job.error
    assert Approval.objects.get(pk=approval.pk).decision == Approval.Decision.VOIDED
    assert _column(fleet, name, "flag") is None  # nothing ran


def test_it_plans_requests_and_reports_a_change_from_the_command_line(transactional_db, demo_targets, users, table,
                                                                      run_here):
    import io

    from django.core.management import CommandError, call_command

    name = table("stage_cli", rows=10)
    change = changes.create(user=users["operator"], target=demo_targets["demo-primary"], kind="add_not_null_column",
                            table=name, column="flag", column_type="boolean", backfill_expression="true",
                            pk_column="id")
    out = io.StringIO()
    call_command("change", "plan", str(change.pk), stdout=out)
    plan = out.getvalue()
    assert "-- stage expand" in plan and f'ALTER TABLE "public"."{name}" ADD COLUMN IF NOT EXISTS "flag" boolean;' in plan
    assert "ACCESS EXCLUSIVE" in plan and "-- stage contract" in plan
    out = io.StringIO()
    call_command("change", "request", str(change.pk), "expand", "--user", "operator", stdout=out)
    approval = Approval.objects.get()
    assert f"approval #{approval.pk} of stage expand requested by operator" in out.getvalue()
    with pytest.raises(CommandError, match="no active user"):
        call_command("change", "request", str(change.pk), "validate", "--user", "nobody-at-all")
    approvals.decide(approval, users["approver"], approve=True, shown_digest=approval.digest)
    run_here(Job.objects.get(kind=changes.STAGE_JOB))
    out = io.StringIO()
    call_command("change", "status", str(change.pk), stdout=out)
    status = out.getvalue()
    assert f"expand    approval #{approval.pk} approved and carried out, job #" in status and "succeeded" in status
    assert "backfill  not requested" in status
