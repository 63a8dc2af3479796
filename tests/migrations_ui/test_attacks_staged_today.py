"""Staged revisions and rollouts tried as an attacker and as a careless client would: what
`manage.py staged_revision` writes for hostile or merely unusual arguments, a rollout requested
twice, a retry that would run SQL nobody approved. Cases marked xfail are findings in
/work/notes/attack-findings.md."""

import ast
import shutil
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from console import approvals, jobs
from console.models import Approval, Job
from migrations_ui import rollouts
from migrations_ui.models import Rollout
from tenants import migrator
from tenants.app_schema import generate
from tests.migrations_ui.test_rollouts import _key, _version
from tests.servers import superuser
from tests.tenants.helpers import onboard, unique_slug

STATUS = "documents_status_add_not_null_column"


# manage.py staged_revision --------------------------------------------------------------------------


def _written(tmp_path, backfill: str) -> list:
    call, definition = generate.helper_call("add_not_null_column", "documents", ["status2"], column_type="text",
                                            backfill=backfill)
    return generate.write(tmp_path, "0009", ["0009"], call, definition)


@pytest.mark.parametrize("backfill", [r"'C:\Nowhere'", r"'\x'", "'\"\"\"'"], ids=["backslash-N", "backslash-x", "quotes"])
def test_it_writes_revisions_python_can_import_whatever_the_backfill_literal(backfill, tmp_path):
    for each in _written(tmp_path, backfill):
        compile(each.path.read_text(), str(each.path), "exec")  # a SyntaxError breaks every revision walk


def test_it_writes_no_code_from_a_backfill_expression_into_the_revision(tmp_path):
    backfill = """'\"\"\";__import__("pathlib").Path("/tmp/attack-marker").touch();\"\"\"'"""
    for each in _written(tmp_path, backfill):
        module = ast.parse(each.path.read_text())
        docstrings = [node for node in module.body if isinstance(node, ast.Expr)]
        assert len(docstrings) == 1, "text of the backfill became statements of the revision module"


def test_it_keeps_the_backfill_expression_of_a_plain_literal_in_the_revision(tmp_path):
    """The control: an ordinary literal makes importable revisions whose CHANGE is that literal."""
    for each in _written(tmp_path, "'draft'"):
        module = ast.parse(each.path.read_text())
        assert [type(n).__name__ for n in module.body].count("Expr") == 1


@pytest.mark.parametrize("args", [
    ["add_not_null_column", 'documents"; DROP TABLE users; --', "status", "--type", "text", "--backfill", "'x'"],
    ["add_not_null_column", "documents", "st atus", "--type", "text", "--backfill", "'x'"],
    ["add_not_null_column", "documents", "status", "--type", "text; DROP TABLE users", "--backfill", "'x'"],
    ["add_not_null_column", "documents", "status", "--type", "text", "--backfill", "1); DROP TABLE users; --"],
    ["add_not_null_column", "documents", "status", "--type", "text", "--backfill", "(SELECT pg_sleep(10))"],
    ["add_not_null_column", "documents", "status", "--type", "text", "--backfill", "'x'", "--pk", "id; --"],
    ["set_not_null", "../../etc", "title", "--backfill", "'x'"],
    ["add_foreign_key", "documents", "owner", "--references", "users"],
    ["add_foreign_key", "documents", "owner", "--references", 'users.id"; DROP TABLE users; --'],
    ["add_index", "documents", "a" * 64],
    ["add_index", "documents", "-x"],
], ids=["table-sql", "column-space", "type-sql", "backfill-two-statements", "backfill-subquery", "pk-sql",
        "table-path", "references-no-column", "references-sql", "column-64", "column-option"])
def test_it_refuses_hostile_staged_revision_arguments_writing_no_file(args, tmp_path, settings):
    with pytest.raises(CommandError):
        call_command("staged_revision", *args, "--versions-dir", str(tmp_path))
    assert list(tmp_path.iterdir()) == []


# Rollouts over real schema tenants ---------------------------------------------------------------------


@pytest.fixture
def tenants(transactional_db, demo_targets, fleet):
    """Three schema tenants at 0003 on the demo primary; their schemas dropped afterwards."""
    made = onboard(demo_targets["demo-primary"], *[(unique_slug(f"atk{n}"), f"Attack {n}") for n in range(3)])
    yield made
    with superuser(fleet) as conn:
        for tenant in made:
            conn.execute(f'DROP SCHEMA IF EXISTS "{tenant.schema_name}" CASCADE')


def test_it_records_one_rollout_of_a_stage_when_the_request_is_posted_twice(tenants, client_as):
    url = reverse("rollout-request", args=[STATUS, "expand"])
    client_as("operator").post(url, {"waves": "2"})
    second = client_as("operator").post(url, {"waves": "2"})  # a double click, or the form of a stale page

    assert second.status_code == 302
    assert Rollout.objects.filter(change_name=STATUS, stage="expand").count() == 1
    assert approvals.waiting(rollouts.ROLLOUT_APPROVAL).count() == 1


def test_it_refuses_self_approval_of_a_rollout_posted_directly(tenants, client_as, users):
    client_as("admin").post(reverse("rollout-request", args=[STATUS, "expand"]), {"waves": "2"})
    rollout = Rollout.objects.get()
    approval = approvals.latest(rollouts.ROLLOUT_APPROVAL, rollout)

    client_as("admin").post(reverse("approval-decide", args=[approval.pk]),
                            {"decision": "approve", "digest": approval.digest})
    assert client_as("operator").post(reverse("approval-decide", args=[approval.pk]),
                                      {"decision": "approve", "digest": approval.digest}).status_code == 403

    assert Approval.objects.get(pk=approval.pk).decision == Approval.Decision.PENDING
    assert Rollout.objects.get(pk=rollout.pk).job is None
    assert [_version(t) for t in tenants] == ["0003"] * 3


def _hold(job):
    """Keep the suite's worker (on the real revision files) from taking the job: not due for an hour."""
    Job.objects.filter(pk=job.pk).update(not_before=timezone.now() + timedelta(hours=1))


def _run_now(run_here, job):
    from tests.migrations_ui.test_rollouts import _left_by_any_worker

    _left_by_any_worker(job.pk)  # else a worker of the suite, on the real revision files, may take it once due
    Job.objects.filter(pk=job.pk).update(not_before=None)
    return run_here(Job.objects.get(pk=job.pk))


def test_it_refuses_a_retry_of_a_rollout_whose_sql_changed_since_its_approval(tenants, users, run_here, fleet, tmp_path):
    canary = tenants[0]
    app = tmp_path / "app_schema"
    shutil.copytree(migrator.settings.TENANT_ALEMBIC_SCRIPT_LOCATION, app, ignore=shutil.ignore_patterns("__pycache__"))
    migrator.script_directory.cache_clear()
    try:
        with override_settings(TENANT_ALEMBIC_SCRIPT_LOCATION=str(app)):
            with superuser(fleet) as conn:  # the canary's table is away: the approved run fails at the canary
                conn.execute(f'ALTER TABLE "{canary.schema_name}".documents RENAME TO documents_away')
            rollout = rollouts.request(rollouts.staged_change(STATUS), "expand", users["operator"], canary=_key(canary))
            approval = approvals.latest(rollouts.ROLLOUT_APPROVAL, rollout)
            with transaction.atomic():
                approvals.decide(approval, users["approver"], approve=True, shown_digest=approval.digest)
                job = Rollout.objects.get(pk=rollout.pk).job
                _hold(job)
            job = _run_now(run_here, job)
            assert job.state == Job.State.FAILED and "failed in the canary" in job.error

            # After the failure the stage's SQL is edited (nobody approved this one), the cause fixed, and
            # an operator retries the job.
            for revision in app.glob("versions/0004_*.py"):
                revision.write_text(revision.read_text().replace("varchar(20)", "varchar(200)"))
            migrator.script_directory.cache_clear()
            with superuser(fleet) as conn:
                conn.execute(f'ALTER TABLE "{canary.schema_name}".documents_away RENAME TO documents')
            with transaction.atomic():
                assert jobs.retry(Job.objects.get(pk=job.pk))
                _hold(job)
            job = _run_now(run_here, job)
    finally:
        migrator.script_directory.cache_clear()

    assert job.state == Job.State.FAILED and "not what was approved" in job.error
    assert [_version(t) for t in tenants] == ["0003"] * 3


def test_it_refuses_a_rollout_request_from_the_shell_in_the_name_of_a_user_without_the_operator_role(tenants, users):
    for name in ("viewer", "approver"):
        with pytest.raises(CommandError, match="operator"):
            call_command("rollout", "request", STATUS, "expand", "--user", name)
    assert not Rollout.objects.exists() and not Approval.objects.exists()


def test_it_refuses_hostile_rollout_requests_from_the_shell_recording_nothing(tenants, users):
    for args in (["no_such_change", "expand"], [STATUS, "nope"], [STATUS, "expand", "--waves", "0"],
                 [STATUS, "expand", "--waves", "x"], [STATUS, "expand", "--parallelism", "0"],
                 [STATUS, "expand", "--canary", "demo-primary/nobody"]):
        with pytest.raises(CommandError):
            call_command("rollout", "request", *args, "--user", "operator")
    with pytest.raises(CommandError, match="no active user"):
        call_command("rollout", "request", STATUS, "expand", "--user", "operator' OR '1'='1")
    assert not Rollout.objects.exists() and not Approval.objects.exists()


@pytest.mark.parametrize("backfill", ["NULL", "NULL::text"])
def test_it_refuses_a_null_backfill_for_a_not_null_column_writing_no_file(backfill, tmp_path):
    with pytest.raises(CommandError, match="NULL"):
        call_command("staged_revision", "add_not_null_column", "documents", "status", "--type", "text",
                     "--backfill", backfill, "--versions-dir", str(tmp_path))
    assert list(tmp_path.iterdir()) == []
