"""Login everywhere, roles on every action, CSRF for HTMX, and the audit trail."""

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from console import roles
from console.models import AuditEvent, Job, Target

PUBLIC = {"/healthz", "/readyz", "/metrics", "/accounts/login/", "/admin/login/"}


def _all_paths(resolver=None, prefix=""):
    resolver = resolver or get_resolver()
    for entry in resolver.url_patterns:
        pattern = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from _all_paths(entry, pattern)
        elif isinstance(entry, URLPattern):
            path = pattern.replace("^", "").replace("$", "")
            for converter in ("<int:target_id>", "<int:job_id>", "<int:id>", "<int:pk>"):
                path = path.replace(converter, "1")
            if "<" in path or "(?P" in path or "\\" in path:
                path = None  # admin's regex internals: covered by the /admin/ prefix below
            if path is not None:
                yield "/" + path


def test_it_redirects_anonymous_visitors_to_the_login_page_everywhere(db):
    client = Client()
    paths = sorted(set(_all_paths()))
    assert "/fleet/" in paths and "/jobs/1/" in paths and "/audit/" in paths
    for path in paths:
        if path in PUBLIC:
            continue
        for method in ("get", "post"):
            response = getattr(client, method)(path)
            logins = ("/accounts/login/", "/admin/login/") if path.startswith("/admin/") else ("/accounts/login/",)
            assert response.status_code == 302, (method, path, response.status_code)
            assert response["Location"].startswith(logins), (method, path, response["Location"])


def test_it_serves_health_and_metrics_without_login(db):
    client = Client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.get("/accounts/login/").status_code == 200


@pytest.fixture
def subjects(demo_targets, users):
    extra = Target.objects.create(name="to-remove", host="127.0.0.1", port=1, dbname="x", username="x")
    running = Job.objects.create(kind="console.selftest", state=Job.State.RUNNING)
    failed = Job.objects.create(kind="console.selftest", state=Job.State.FAILED)
    paused = Job.objects.create(kind="console.selftest", state=Job.State.PAUSED)
    return {"target": demo_targets["demo-scratch"], "extra": extra, "running": running, "failed": failed, "paused": paused}


def _action_requests(subjects):
    """Every registered action, as the request that performs it."""
    target, extra = subjects["target"], subjects["extra"]
    from tenants.models import Tenant

    tenant, _ = Tenant.objects.get_or_create(slug="matrix", defaults={"name": "Matrix", "target": target})
    return {
        "target.create": ("post", "/fleet/targets/new/", {"name": ""}),
        "target.update": ("post", f"/fleet/targets/{target.pk}/edit/", {"name": ""}),
        "target.delete": ("post", f"/fleet/targets/{extra.pk}/delete/", {}),
        "target.test": ("post", f"/fleet/targets/{target.pk}/test/", {}),
        "job.pause": ("post", f"/jobs/{subjects['running'].pk}/pause/", {}),
        "job.resume": ("post", f"/jobs/{subjects['paused'].pk}/resume/", {}),
        "job.cancel": ("post", f"/jobs/{subjects['running'].pk}/cancel/", {}),
        "job.retry": ("post", f"/jobs/{subjects['failed'].pk}/retry/", {}),
        "job.selftest": ("post", "/jobs/selftest/", {"steps": 2}),
        "tenant.onboard": ("post", "/tenants/onboard/", {"slug": ""}),
        "tenant.retry": ("post", f"/tenants/{tenant.pk}/retry/", {}),
        "tenants.migrate": ("post", "/tenants/migrate/", {"target": ""}),
        "tenants.refresh_health": ("post", "/tenants/health/", {}),
        "tenant.refresh_health": ("post", f"/tenants/{tenant.pk}/health/", {}),
        "tenant.offboard_request": ("post", f"/tenants/{tenant.pk}/offboard/", {}),
        "tenant.offboard_approve": ("post", f"/tenants/{tenant.pk}/offboard/approve/", {}),
        "tenant.offboard_reject": ("post", f"/tenants/{tenant.pk}/offboard/reject/", {}),
        "approvals.decide": ("post", "/approvals/999999/decide/", {"decision": "approve"}),
        "approvals.withdraw": ("post", "/approvals/999999/withdraw/", {}),
        "monitors.explain": ("post", f"/fleet/targets/{target.pk}/explain/", {"sql": "SELECT 1"}),
        "monitors.session": ("post", f"/fleet/targets/{target.pk}/sessions/999999/cancel/", {}),
        "monitors.thresholds": ("post", f"/fleet/targets/{target.pk}/alerts/save/", {"metric": "replica_lag_s", "reset": "on"}),
        "migrations.backfill": ("post", "/migrations/backfills/run/", {"table": ""}),
        "migrations.backfill_control": ("post", "/migrations/backfills/999999/pause/", {}),
        "migrations.change_create": ("post", "/migrations/changes/new/", {"table": ""}),
        "migrations.change_override": ("post", "/migrations/changes/999999/override/", {"reason": ""}),
        "migrations.stage_request": ("post", "/migrations/changes/999999/stages/expand/request/", {}),
        "migrations.rollout_request": ("post", "/migrations/staged/nothing/expand/rollout/", {}),
        "migrations.rollout_control": ("post", "/migrations/rollouts/999999/pause/", {}),
        "drills.run": ("post", "/drills/run/", {"target": ""}),
        "drills.policy_save": ("post", "/drills/policies/new/", {"target": ""}),
        "drills.drill_backup": ("post", "/drills/backups/999999/drill/", {}),
        "pitr.policy_save": ("post", f"/fleet/targets/{target.pk}/physical-backups/policy/", {"stanza": ""}),
        "pitr.backup": ("post", "/fleet/targets/999999/physical-backups/backup/", {"type": "full"}),
        "pitr.drill": ("post", "/fleet/targets/999999/physical-backups/drill/", {}),
    }


EXPECTED_ROLE = {
    "target.create": "admin", "target.update": "admin", "target.delete": "admin",
    "target.test": "operator", "job.pause": "operator", "job.resume": "operator", "job.cancel": "operator", "job.retry": "operator", "job.selftest": "operator",
    "tenant.onboard": "operator", "tenant.retry": "operator", "tenants.migrate": "operator",
    "tenants.refresh_health": "operator", "tenant.refresh_health": "operator", "tenant.offboard_request": "operator",
    "tenant.offboard_approve": "approver", "tenant.offboard_reject": "approver",
    "approvals.decide": "approver", "approvals.withdraw": "viewer",
    "monitors.explain": "operator", "monitors.session": "operator", "monitors.thresholds": "admin",
    "migrations.backfill": "operator", "migrations.backfill_control": "operator",
    "migrations.change_create": "operator", "migrations.change_override": "operator",
    "migrations.stage_request": "operator", "migrations.rollout_request": "operator",
    "migrations.rollout_control": "operator",
    "drills.run": "operator", "drills.policy_save": "operator", "drills.drill_backup": "operator",
    "pitr.policy_save": "operator", "pitr.backup": "operator", "pitr.drill": "operator",
}


def test_it_checks_the_role_of_every_action(subjects, users):
    requests = _action_requests(subjects)
    assert set(requests) == set(roles.ACTIONS), "every registered action needs a row in this matrix"
    assert {name: role for name, (role, _view) in roles.ACTIONS.items()} == EXPECTED_ROLE
    for role_name in ("viewer", "operator", "approver", "admin", "nobody"):
        client = Client()
        client.force_login(users[role_name])
        granted = roles.roles_of(users[role_name])
        for action_name, (method, path, data) in requests.items():
            response = getattr(client, method)(path, data)
            allowed = EXPECTED_ROLE[action_name] in granted
            assert (response.status_code != 403) == allowed, (role_name, action_name, response.status_code)
            if not allowed:
                denial = AuditEvent.objects.filter(action=action_name, outcome="denied", actor_username=role_name)
                assert denial.exists(), (role_name, action_name)


def test_it_hides_buttons_a_role_cannot_use(client_as, demo_targets):
    target = demo_targets["demo-primary"]
    viewer_page = client_as("viewer").get(f"/fleet/targets/{target.pk}/").content.decode()
    assert "Test connection" not in viewer_page and "Edit</a>" not in viewer_page
    admin_page = client_as("admin").get(f"/fleet/targets/{target.pk}/").content.decode()
    assert "Test connection" in admin_page and "Edit</a>" in admin_page


def test_it_accepts_htmx_posts_with_the_csrf_header_only(users, demo_targets):
    client = Client(enforce_csrf_checks=True)
    client.force_login(users["operator"])
    page = client.get(f"/fleet/targets/{demo_targets['demo-primary'].pk}/")
    token = page.cookies["csrftoken"].value
    assert '"x-csrftoken": "' in page.content.decode()  # hx-headers on <body>
    url = f"/fleet/targets/{demo_targets['demo-primary'].pk}/test/"
    assert client.post(url, HTTP_HX_REQUEST="true").status_code == 403
    response = client.post(url, HTTP_HX_REQUEST="true", HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200 and "Connected" in response.content.decode()


def test_it_filters_the_audit_trail(client_as, users):
    AuditEvent.objects.create(actor_username="operator", action="target.test", outcome="ok", object_type="target")
    AuditEvent.objects.create(actor_username="viewer", action="job.cancel", outcome="denied", object_type="job")
    AuditEvent.objects.create(actor_username="admin", action="target.delete", outcome="failed", object_type="target")
    client = client_as("viewer")
    page = client.get("/audit/?outcome=denied").content.decode()
    assert "job.cancel" in page and "target.test" not in page and "target.delete" not in page
    page = client.get("/audit/?actor=admin&action=target").content.decode()
    assert "target.delete" in page and "target.test" not in page
    page = client.get("/audit/?object_type=job").content.decode()
    assert "job.cancel" in page and "target.delete" not in page
