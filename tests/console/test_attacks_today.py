"""Today's features tried as an attacker and as a careless client would: backup policies, drill
and PITR start buttons, the live job rows endpoint, list sorting and paging, roles posting straight
to the URLs, CSRF-less posts. Each hostile input gets a clear error (a 4xx or a form error, never
a 500) and changes nothing. Cases marked xfail are findings in /work/notes/attack-findings.md."""

from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from console import approvals
from console.models import Approval, AuditEvent, Job
from monitors.drills import policies
from monitors.drills.models import BackupPolicy
from monitors.drills.physical import PhysicalBackupPolicy

ERROR_MARKERS = ('class="error', 'class="errorlist', "msg-error", 'role="alert"')


def _messages(response) -> str:
    return " ".join(str(m) for m in get_messages(response.wsgi_request))


def _policy_form(demo_targets, tmp_path, **hostile):
    valid = {"target": demo_targets["demo-primary"].pk, "database": "demo", "every_hours": "", "cron": "0 3 * * *",
             "keep_count": 5, "keep_days": "", "destination": str(tmp_path), "scratch": demo_targets["demo-scratch"].pk,
             "smoke_queries": "SELECT 1", "backup_max_age_h": 26, "drill_max_age_h": 168}
    return {**valid, **hostile}


POLICY_CASES = [
    # (id, the hostile fields, finding number if the defence does not hold yet)
    ("cron-negative", {"cron": "-1 * * * *"}, None),
    ("cron-negative-step", {"cron": "*/-1 * * * *"}, None),
    ("cron-step-zero", {"cron": "*/0 * * * *"}, None),
    ("cron-six-fields", {"cron": "* * * * * *"}, None),
    ("cron-out-of-range", {"cron": "99 99 * * *"}, None),
    ("cron-huge-range", {"cron": "0-99999999 * * * *"}, None),
    ("cron-never", {"cron": "0 0 30 2 *"}, None),
    ("cron-sql", {"cron": "'; DROP TABLE console_job; --"}, None),
    ("keep-count-negative", {"keep_count": "-1"}, None),
    ("keep-count-zero", {"keep_count": "0"}, None),
    ("keep-days-zero", {"keep_days": "0"}, None),
    ("every-hours-over-max", {"cron": "", "every_hours": "9000"}, None),
    ("drill-age-over-max", {"drill_max_age_h": "2147483647"}, None),
    ("keep-count-huge", {"keep_count": "99999999999999999999"}, None),
    ("keep-days-negative", {"keep_days": "-5"}, None),
    ("every-hours-zero", {"cron": "", "every_hours": "0"}, None),
    ("every-hours-huge", {"cron": "", "every_hours": "1e9"}, None),
    ("alert-age-negative", {"backup_max_age_h": "-1"}, None),
    ("destination-relative-dotdot", {"destination": "../../etc"}, None),
    ("destination-option", {"destination": "--repo1-path=/"}, None),
    ("destination-nul", {"destination": "/tmp/x\x00y"}, None),
    ("destination-absolute-dotdot", {"destination": "/tmp/../etc/fleet"}, None),
    ("database-sql", {"database": 'demo" OR 1=1 --'}, None),
    ("database-conninfo", {"database": "host=evil.example dbname=demo"}, None),
    ("database-dotdot", {"database": ".."}, None),
    ("tenant-missing", {"tenant": "999999"}, None),
    ("tenant-sql", {"tenant": "1 OR 1=1"}, None),
    ("target-is-scratch", {"target": "{scratch}"}, None),
    ("scratch-is-primary", {"scratch": "{primary}"}, None),
    ("smoke-two-statements", {"smoke_queries": "SELECT 1; DROP TABLE pgbench_accounts"}, None),
    ("smoke-delete", {"smoke_queries": "DELETE FROM pgbench_history"}, None),
    ("smoke-copy-program", {"smoke_queries": "COPY pgbench_history TO PROGRAM 'id'"}, None),
    ("smoke-data-modifying-cte", {"smoke_queries": "WITH d AS (DELETE FROM pgbench_history RETURNING *) SELECT * FROM d"}, None),
    ("smoke-terminate", {"smoke_queries": "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"}, None),
]


@pytest.mark.parametrize("fields,finding", [
    pytest.param(fields, finding, id=case,
                 marks=[pytest.mark.xfail(strict=True, reason=f"attack finding {finding}")] if finding else [])
    for case, fields, finding in POLICY_CASES
])
def test_it_refuses_a_hostile_backup_policy_clearly_saving_nothing(fields, finding, demo_targets, client_as, tmp_path):
    ids = {"{scratch}": str(demo_targets["demo-scratch"].pk), "{primary}": str(demo_targets["demo-primary"].pk)}
    data = {name: ids.get(value, value) if isinstance(value, str) else value
            for name, value in _policy_form(demo_targets, tmp_path, **fields).items()}
    operator = client_as("operator")

    response = operator.post(reverse("drill-policy-new"), data)

    page = response.content.decode(errors="replace")
    assert response.status_code < 500, page[-1500:]
    assert response.status_code in (200, 400) and any(marker in page for marker in ERROR_MARKERS), page[-1500:]
    assert not BackupPolicy.objects.exists()


def test_it_saves_the_valid_policy_form_these_cases_start_from(demo_targets, client_as, tmp_path):
    """The control: without the hostile field the same form saves, so each refusal above is the field's."""
    response = client_as("operator").post(reverse("drill-policy-new"), _policy_form(demo_targets, tmp_path))
    assert response.status_code == 302 and BackupPolicy.objects.count() == 1


@pytest.fixture
def policy(demo_targets, tmp_path):
    return BackupPolicy.objects.create(target=demo_targets["demo-primary"], database="demo", keep_count=3,
                                       every_hours=24, destination=str(tmp_path), scratch=demo_targets["demo-scratch"])


def _edit_form(policy, **changes):
    return {"every_hours": 24, "cron": "", "keep_count": policy.keep_count or "", "keep_days": policy.keep_days or "",
            "destination": policy.destination, "scratch": policy.scratch_id, "smoke_queries": "",
            "backup_max_age_h": 26, "drill_max_age_h": 168, **changes}


# Roles posting straight to the URLs -------------------------------------------------------------------


def test_it_refuses_a_viewer_every_drill_and_pitr_action_posted_directly(policy, demo_targets, client_as):
    primary = demo_targets["demo-primary"]
    PhysicalBackupPolicy.objects.create(target=primary, stanza="demo", config="/nonexistent/pgbackrest.conf")
    viewer = client_as("viewer")
    before = (Job.objects.count(), BackupPolicy.objects.count())
    posts = [
        (reverse("drill-run"), {"policy": policy.pk}),
        (reverse("drill-policy-new"), {"target": primary.pk, "database": "other", "cron": "0 3 * * *",
                                       "backup_max_age_h": 26, "drill_max_age_h": 168}),
        (reverse("drill-policy-edit", args=[policy.pk]), _edit_form(policy, keep_count=1)),
        (reverse("physical-backup-start", args=[primary.pk]), {"type": "full"}),
        (reverse("pitr-drill-start", args=[primary.pk]), {}),
    ]
    for url, data in posts:
        assert viewer.post(url, data).status_code == 403, url
    policy.refresh_from_db()
    assert (Job.objects.count(), BackupPolicy.objects.count()) == before
    assert policy.keep_count == 3 and policy.pending_retention is None
    assert not Approval.objects.exists()


def test_it_refuses_self_approval_and_an_operator_approving_a_lower_retention_directly(policy, client_as, users):
    # An admin (operator and approver at once) asks, then approves its own request; an operator posts too.
    client_as("admin").post(reverse("drill-policy-edit", args=[policy.pk]), _edit_form(policy, keep_count=1))
    approval = approvals.pending(policies.RETENTION_APPROVAL, policy)
    assert approval is not None and approval.requested_by == users["admin"]

    own = client_as("admin").post(reverse("approval-decide", args=[approval.pk]),
                                  {"decision": "approve", "digest": approval.digest})
    assert "someone else must decide" in _messages(own)
    assert client_as("operator").post(reverse("approval-decide", args=[approval.pk]),
                                      {"decision": "approve", "digest": approval.digest}).status_code == 403
    assert client_as("viewer").post(reverse("approval-decide", args=[approval.pk]),
                                    {"decision": "approve", "digest": approval.digest}).status_code == 403

    policy.refresh_from_db()
    assert policy.keep_count == 3 and policy.pending_retention == {"keep_count": 1, "keep_days": None}
    assert Approval.objects.get(pk=approval.pk).decision == Approval.Decision.PENDING
    assert AuditEvent.objects.filter(action="approval.approve", outcome="denied").count() == 1


def test_it_voids_a_retention_approval_replayed_after_the_asked_retention_changed(policy, client_as, users):
    edit = reverse("drill-policy-edit", args=[policy.pk])
    client_as("operator").post(edit, _edit_form(policy, keep_count=2))
    first = approvals.pending(policies.RETENTION_APPROVAL, policy)
    client_as("operator").post(edit, _edit_form(policy, keep_count=1))  # asks for less, behind the approver's back

    client_as("approver").post(reverse("approval-decide", args=[first.pk]),
                               {"decision": "approve", "digest": first.digest})

    policy.refresh_from_db()
    assert policy.keep_count == 3
    assert Approval.objects.get(pk=first.pk).decision == Approval.Decision.VOIDED


def test_it_refuses_csrf_less_posts_to_todays_actions(policy, demo_targets, users):
    primary = demo_targets["demo-primary"]
    PhysicalBackupPolicy.objects.create(target=primary, stanza="demo", config="/nonexistent/pgbackrest.conf")
    admin = Client(enforce_csrf_checks=True)
    admin.force_login(users["admin"])
    before = Job.objects.count()
    for url, data in [
        (reverse("drill-run"), {"policy": policy.pk}),
        (reverse("drill-policy-edit", args=[policy.pk]), _edit_form(policy, keep_count=1)),
        (reverse("physical-backup-start", args=[primary.pk]), {"type": "full"}),
        (reverse("pitr-drill-start", args=[primary.pk]), {}),
        (reverse("rollout-request", args=["documents_status_add_not_null_column", "expand"]), {}),
        (reverse("rollout-cancel", args=[1]), {}),
    ]:
        assert admin.post(url, data).status_code == 403, url
    assert Job.objects.count() == before and not Approval.objects.exists()
    assert BackupPolicy.objects.get(pk=policy.pk).pending_retention is None


# Start buttons ------------------------------------------------------------------------------------------


def test_it_starts_one_backup_and_drill_when_the_button_is_pressed_twice(policy, client_as):
    operator = client_as("operator")
    first = operator.post(reverse("drill-run"), {"policy": policy.pk})
    second = operator.post(reverse("drill-run"), {"policy": policy.pk})

    assert first.status_code == second.status_code == 302
    assert Job.objects.filter(kind="drills.backup_and_drill").count() == 1
    assert "already" in _messages(second)


def test_it_starts_one_physical_backup_when_the_button_is_pressed_twice(demo_targets, client_as):
    primary = demo_targets["demo-primary"]
    PhysicalBackupPolicy.objects.create(target=primary, stanza="demo", config="/nonexistent/pgbackrest.conf")
    operator = client_as("operator")
    operator.post(reverse("physical-backup-start", args=[primary.pk]), {"type": "full"})
    operator.post(reverse("physical-backup-start", args=[primary.pk]), {"type": "full"})

    assert Job.objects.filter(kind="pitr.backup").count() == 1


def test_it_refuses_a_drill_of_something_that_is_not_there(demo_targets, client_as):
    operator = client_as("operator")
    for data in ({"policy": "999999"}, {"target": "999999"}, {"policy": "-1"}, {"policy": "99999999999999999999"},
                 {"target": str(demo_targets["demo-scratch"].pk)}, {"target": str(demo_targets["demo-bouncer"].pk)},
                 {}):
        response = operator.post(reverse("drill-run"), data)
        assert response.status_code == 302, data
        assert "choose a target" in _messages(response), data
    assert not Job.objects.exists()


@pytest.mark.parametrize("data", [{"policy": "1 OR 1=1"}, {"target": "abc"}, {"target": "1e3"}])
def test_it_refuses_a_drill_of_a_non_numeric_or_huge_id_clearly(data, demo_targets, client_as):
    response = client_as("operator").post(reverse("drill-run"), data)
    assert response.status_code in (302, 400), response.status_code
    assert not Job.objects.exists()


PITR_MOMENTS = [
    ("malformed", "2026-13-45 99:99:99"),
    ("words", "yesterday"),
    ("option", "--repo1-path=/"),
    ("option-after-date", "2026-01-01 00:00:00 --repo1-path=/"),
    ("dash", "-"),
    ("sql", "2026-01-01'; DROP TABLE console_job; --"),
    ("future", "{future}"),
    ("far-future", "9999-12-31T23:59:59"),
    ("future-with-offset", "{future_offset}"),
    ("nul", "2026-01-01\x00"),
    ("huge", "9" * 5000),
]


@pytest.mark.parametrize("moment", [pytest.param(value, id=case) for case, value in PITR_MOMENTS])
def test_it_refuses_a_pitr_drill_to_a_hostile_moment_starting_nothing(moment, demo_targets, client_as):
    primary = demo_targets["demo-primary"]
    PhysicalBackupPolicy.objects.create(target=primary, stanza="demo", config="/nonexistent/pgbackrest.conf")
    now = timezone.now()
    moment = moment.format(future=(now + timedelta(hours=1)).isoformat(),
                           future_offset=(now + timedelta(minutes=30)).astimezone(
                               timezone.get_fixed_timezone(-600)).replace(tzinfo=None).isoformat() + "-10:00")

    response = client_as("operator").post(reverse("pitr-drill-start", args=[primary.pk]), {"target_at": moment})

    if response.status_code != 400:  # a NUL byte: the console's middleware refuses the whole request
        assert response.status_code == 302 and response["Location"] == reverse("physical-backups", args=[primary.pk])
        assert "Not started" in _messages(response)
    assert not Job.objects.exists()


@pytest.mark.parametrize("kind", ["--repo1-path=/", "full --repo1-path=/", "-", "FULL", "full\x00", "", "incr;id"])
def test_it_refuses_a_physical_backup_of_a_hostile_type_starting_nothing(kind, demo_targets, client_as):
    primary = demo_targets["demo-primary"]
    PhysicalBackupPolicy.objects.create(target=primary, stanza="demo", config="/nonexistent/pgbackrest.conf")

    response = client_as("operator").post(reverse("physical-backup-start", args=[primary.pk]), {"type": kind})

    assert response.status_code == 400 or (response.status_code == 302 and "Not started" in _messages(response))
    assert not Job.objects.exists()


def test_it_answers_404_for_physical_actions_on_a_target_without_a_policy_or_missing(demo_targets, client_as):
    operator = client_as("operator")
    for target_id in (demo_targets["demo-replica"].pk, 999999):
        assert operator.post(reverse("physical-backup-start", args=[target_id]), {"type": "full"}).status_code == 404
        assert operator.post(reverse("pitr-drill-start", args=[target_id]), {}).status_code == 404
    assert client_as("viewer").get(reverse("physical-backups", args=[999999])).status_code == 404
    assert not Job.objects.exists()


def test_it_shows_a_broken_pgbackrest_configuration_on_the_page_instead_of_failing(demo_targets, client_as):
    primary = demo_targets["demo-primary"]
    PhysicalBackupPolicy.objects.create(target=primary, stanza="demo", config="/nonexistent/../pgbackrest.conf")

    response = client_as("viewer").get(reverse("physical-backups", args=[primary.pk]))

    assert response.status_code == 200
    assert "pgbackrest" in response.content.decode().lower()


# Ids and pages that do not exist -------------------------------------------------------------------------


def test_it_answers_404_for_drill_pages_of_objects_that_do_not_exist(client_as):
    viewer = client_as("viewer")
    for url in (reverse("drill-policy", args=[999999]), reverse("drill-policy-series", args=[999999]),
                reverse("drill-run-detail", args=[999999]), reverse("pitr-drill", args=[999999]),
                "/drills/policies/99999999999999999999/", "/drills/runs/99999999999999999999/"):
        assert viewer.get(url).status_code == 404, url
    assert client_as("operator").post(reverse("drill-policy-edit", args=[999999]), {}).status_code == 404


def test_it_keeps_a_policy_page_up_whatever_its_page_and_window_parameters(policy, client_as):
    viewer = client_as("viewer")
    for params in ({"page": "-1"}, {"page": "abc"}, {"page": "99999999999999999999"}, {"page": "1e309"},
                   {"page": "nan"}):
        assert viewer.get(reverse("drill-policy", args=[policy.pk]), params).status_code == 200, params
    assert viewer.get(reverse("drill-policy", args=[policy.pk]), {"page": "\x00"}).status_code == 400
    for window in ("-1d", "99999d", "<script>", "7d' OR 1=1"):
        answer = viewer.get(reverse("drill-policy-series", args=[policy.pk]), {"window": window})
        assert answer.status_code == 200 and answer.json()["window"] == "7d", window


JOB_ROWS_REFUSED = ["", ",", "1,,2", "-1", "1.0", "abc", "1;2", "1 OR 1=1", "\u0661", "\uff11", "0x10",
                    ",".join(["1"] * 101), "1," * 5000]


@pytest.mark.parametrize("ids", [pytest.param(v, id=f"case{n}") for n, v in enumerate(JOB_ROWS_REFUSED)])
def test_it_refuses_hostile_job_row_ids_with_400(ids, client_as):
    response = client_as("viewer").get(reverse("job-rows"), {"ids": ids})
    assert response.status_code == 400


def test_it_answers_job_rows_for_ids_beyond_any_integer_column_without_failing(client_as):
    job = Job.objects.create(kind="console.selftest")
    response = client_as("viewer").get(reverse("job-rows"), {"ids": f"99999999999999999999,{job.pk},0"})
    assert response.status_code in (200, 286, 400)
    if response.status_code != 400:
        assert f"/jobs/{job.pk}/" in response.content.decode()


def test_it_shows_job_rows_only_to_someone_logged_in(db):
    job = Job.objects.create(kind="console.selftest", params={"secret": "x"})
    response = Client().get(reverse("job-rows"), {"ids": str(job.pk)})
    assert response.status_code in (302, 401, 403)
    assert f"/jobs/{job.pk}/" not in response.content.decode()


LIST_PARAMS = [{"sort": "bogus"}, {"sort": "-"}, {"sort": "--"}, {"sort": "pk"}, {"sort": "password"},
               {"sort": "requested_by__password"}, {"sort": "name;DROP TABLE x"}, {"sort": "\x00"},
               {"page": "-1"}, {"page": "0"}, {"page": "abc"}, {"page": "99999999999999999999"}, {"page": "1e309"},
               {"page": "inf"}, {"sort": "x" * 10_000}, {"sort": ["tenant", "-tenant"], "page": ["1", "2"]}]


@pytest.mark.parametrize("url", ["tenants", "jobs"])
@pytest.mark.parametrize("params", [pytest.param(p, id=f"case{n}") for n, p in enumerate(LIST_PARAMS)])
def test_it_keeps_the_sorted_lists_up_whatever_the_sort_and_page(url, params, db, client_as):
    response = client_as("viewer").get(reverse(url), params)
    assert response.status_code == (400 if params.get("sort") == "\x00" else 200)


# Rollouts: roles and hostile input (no tenant needed: each is refused before one is looked up) -----------

STATUS = "documents_status_add_not_null_column"


def test_it_refuses_a_viewer_requesting_or_controlling_a_rollout(client_as):
    viewer = client_as("viewer")
    assert viewer.post(reverse("rollout-request", args=[STATUS, "expand"]), {}).status_code == 403
    for verb in ("pause", "resume", "cancel", "retry"):
        assert viewer.post(reverse(f"rollout-{verb}", args=[1]), {}).status_code == 403
    assert not Approval.objects.exists() and not Job.objects.exists()


def test_it_answers_404_for_rollouts_and_staged_changes_that_do_not_exist(client_as):
    operator = client_as("operator")
    assert operator.get(reverse("staged-change", args=["no_such_change"])).status_code == 404
    assert operator.get("/migrations/staged/..%2F..%2Fetc%2Fpasswd/").status_code == 404
    assert operator.post(reverse("rollout-request", args=["no_such_change", "expand"]), {}).status_code == 404
    for verb in ("pause", "resume", "cancel", "retry"):
        assert operator.post(reverse(f"rollout-{verb}", args=[999999]), {}).status_code == 404


ROLLOUT_FORMS = [
    ("stage-unknown", "nope", {}),
    ("stage-sql", "expand'; DROP TABLE x; --", {}),
    ("waves-zero", "expand", {"waves": "0"}),
    ("waves-negative", "expand", {"waves": "2,-1"}),
    ("waves-text", "expand", {"waves": "two"}),
    ("waves-float", "expand", {"waves": "1.5"}),
    ("parallelism-zero", "expand", {"parallelism": "0"}),
    ("parallelism-negative", "expand", {"parallelism": "-4"}),
    ("parallelism-huge", "expand", {"parallelism": "99999999999999999999"}),
    ("parallelism-text", "expand", {"parallelism": "all"}),
    ("canary-missing", "expand", {"canary": "demo-primary/no_such_tenant"}),
]


@pytest.mark.parametrize("stage,data", [pytest.param(s, d, id=case) for case, s, d in ROLLOUT_FORMS])
def test_it_refuses_a_hostile_rollout_request_clearly_recording_nothing(stage, data, client_as):
    from migrations_ui.models import Rollout

    response = client_as("operator").post(reverse("rollout-request", args=[STATUS, stage]), data)

    assert response.status_code == 302 and response["Location"] == reverse("staged-change", args=[STATUS])
    assert "not requested" in _messages(response)
    assert not Rollout.objects.exists() and not Approval.objects.exists()


# Numbers the form takes that the pages and retention cannot ---------------------------------------------


def test_it_keeps_the_drills_pages_up_for_a_policy_every_huge_number_of_hours(demo_targets, client_as, tmp_path):
    form = _policy_form(demo_targets, tmp_path, cron="", every_hours="2147483647")
    saved = client_as("operator").post(reverse("drill-policy-new"), form)
    if saved.status_code == 302:  # taken: its first scheduled run happens, then the pages must still show it
        policy = BackupPolicy.objects.get()
        BackupPolicy.objects.filter(pk=policy.pk).update(scheduled_at=timezone.now())
        assert client_as("viewer").get(reverse("drills")).status_code == 200
        assert client_as("viewer").get(reverse("drill-policy", args=[policy.pk])).status_code == 200
    else:
        assert saved.status_code == 200 and any(marker in saved.content.decode() for marker in ERROR_MARKERS)


def test_it_applies_retention_of_a_policy_keeping_a_huge_number_of_days(demo_targets, client_as, tmp_path):
    from monitors.drills import backups
    from monitors.drills.models import Backup

    saved = client_as("operator").post(reverse("drill-policy-new"), _policy_form(demo_targets, tmp_path,
                                                                                 keep_count="", keep_days="1000000"))
    if saved.status_code != 302:
        assert any(marker in saved.content.decode() for marker in ERROR_MARKERS)
        return
    policy = BackupPolicy.objects.get()
    for hours_ago in (48, 24):
        Backup.objects.create(policy=policy, target=policy.target, database="demo", state=Backup.State.DONE,
                              snapshot_at=timezone.now() - timedelta(hours=hours_ago), verified_at=timezone.now())

    assert backups.apply_retention(policy) == []  # the backup job calls this after every backup


# Fields the forms must not take, and pages of other objects -------------------------------------------------


def test_it_keeps_the_target_and_database_of_a_policy_whatever_an_edit_posts(policy, demo_targets, client_as):
    edit = _edit_form(policy, target=demo_targets["demo-replica"].pk, database="postgres", tenant="1")
    client_as("operator").post(reverse("drill-policy-edit", args=[policy.pk]), edit)

    policy.refresh_from_db()
    assert (policy.target_id, policy.database, policy.tenant_id) == (demo_targets["demo-primary"].pk, "demo", None)


def test_it_takes_a_tenant_policys_target_and_database_from_the_tenant_not_the_post(demo_targets, client_as, tmp_path):
    from tenants.models import Tenant

    primary = demo_targets["demo-primary"]
    tenant = Tenant.objects.create(slug="atk_policy", name="Attack", target=primary, strategy=Tenant.Strategy.SCHEMA,
                                   state=Tenant.State.ACTIVE)
    archived = Tenant.objects.create(slug="atk_gone", name="Gone", target=primary, strategy=Tenant.Strategy.SCHEMA,
                                     state=Tenant.State.ARCHIVED)
    operator = client_as("operator")
    refused = operator.post(reverse("drill-policy-new"), _policy_form(demo_targets, tmp_path, tenant=archived.pk))
    assert refused.status_code == 200 and any(marker in refused.content.decode() for marker in ERROR_MARKERS)
    assert not BackupPolicy.objects.exists()

    operator.post(reverse("drill-policy-new"), _policy_form(demo_targets, tmp_path, tenant=tenant.pk,
                                                            target=demo_targets["demo-replica"].pk, database="postgres"))

    saved = BackupPolicy.objects.get()
    assert (saved.tenant_id, saved.target_id, saved.database) == (tenant.pk, primary.pk, primary.dbname)


@pytest.mark.parametrize("params", [{"target": "abc"}, {"target": "999999"}, {"target": "99999999999999999999"},
                                    {"target": "1 OR 1=1"}, {"target": "{scratch}"}])
def test_it_shows_no_migrate_all_plan_for_a_hostile_target(params, demo_targets, client_as):
    params = {k: str(demo_targets["demo-scratch"].pk) if v == "{scratch}" else v for k, v in params.items()}
    response = client_as("viewer").get(reverse("migrate-all"), params)
    assert response.status_code == 200 and any(marker in response.content.decode() for marker in ERROR_MARKERS)
    assert not Job.objects.exists()


@pytest.mark.parametrize("params", [{"tenant": "abc"}, {"tenant": "999999"}, {"tenant": "99999999999999999999"},
                                    {"from": "../../etc/passwd"}, {"from": "0001; DROP TABLE x"}, {"from": "-x"}])
def test_it_keeps_the_app_plan_up_whatever_its_tenant_and_from(params, db, client_as):
    assert client_as("viewer").get(reverse("app-plan"), params).status_code == 200


def test_it_answers_404_for_live_fragments_of_runs_that_do_not_exist(client_as):
    viewer = client_as("viewer")
    for url in (reverse("drill-run-detail", args=[999999]), reverse("pitr-drill", args=[999999])):
        assert viewer.get(url, {"fragment": "live"}, headers={"HX-Request": "true"}).status_code == 404


@pytest.mark.parametrize("tenant", ["abc", "1 OR 1=1", "99999999999999999999", "-1", "<script>", ""])
def test_it_shows_the_new_policy_form_whatever_tenant_the_link_names(tenant, db, client_as):
    response = client_as("operator").get(reverse("drill-policy-new"), {"tenant": tenant})
    assert response.status_code == 200 and "<script>" not in response.content.decode().split("<main")[-1]


@pytest.mark.parametrize("sort", ["name", "role", "status", "pool", "tps", "sessions", "longest_query", "oldest_xact",
                                  "cache_hit", "size", "xid_age", "version", "uptime", "connections", "lag", "slow",
                                  "alerts", "-name", "bogus", "__class__", "\u202ename", "x" * 5000])
def test_it_sorts_the_fleet_overview_by_any_column_of_targets_never_sampled(sort, demo_targets, client_as):
    from console.models import Target

    Target.objects.create(name="never-sampled", role=Target.Role.PRIMARY, host="127.0.0.1", port=1, dbname="demo",
                          username="fleet_monitor", password_env="FLEET_MONITOR_PASSWORD")
    for page in ("1", "-1", "abc", "99999999999999999999"):
        response = client_as("viewer").get(reverse("fleet"), {"sort": sort, "page": page})
        assert response.status_code == 200, (sort, page)
