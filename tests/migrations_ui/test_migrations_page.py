"""The Migrations page lists every migration-like thing (staged changes, rollouts, changes,
backfills, and jobs including tenants.migrate); "Migrate all to head" shows what it will do on a
target and runs only once confirmed, never past the staged revisions."""

import re

import pytest
from django.urls import reverse

from console.models import Job
from tenants import runners
from tests.servers import superuser
from tests.tenants.helpers import unique_slug
from tests.tenants.test_migrate import _old_tenant, _version


def test_it_lists_staged_changes_and_every_migration_like_job(client_as, demo_targets):
    Job.objects.create(kind=runners.MIGRATE, params={"target_id": demo_targets["demo-primary"].pk})
    Job.objects.create(kind="migrations.backfill", params={})
    Job.objects.create(kind="tenants.health", params={})

    page = client_as("viewer").get(reverse("migrations")).content.decode()

    assert "tenants.migrate" in page and "migrations.backfill" in page and "tenants.health" not in page
    assert 'data-change="documents_status_add_not_null_column"' in page
    assert 'data-change="document_versions_reviewed_by_add_foreign_key"' in page
    assert 'id="release-revision">0003<' in page
    assert reverse("staged-change", args=["documents_status_add_not_null_column"]) in page
    assert 'id="migrate-all-link"' not in page  # a viewer sees, an operator acts


def test_it_shows_what_migrate_all_does_and_runs_it_only_once_confirmed(transactional_db, client_as, demo_targets,
                                                                       fleet, run_here):
    primary = demo_targets["demo-primary"]
    behind, current = _old_tenant(primary, unique_slug("behind")), _old_tenant(primary, unique_slug("cur"), "0003")
    operator = client_as("operator")
    try:
        # Posting without the confirmation shows the plan instead of starting anything.
        unconfirmed = operator.post(reverse("tenants-migrate"), {"target": primary.pk})
        assert unconfirmed.status_code == 302 and unconfirmed.url == f"{reverse('migrate-all')}?target={primary.pk}"
        assert not Job.objects.filter(kind=runners.MIGRATE).exists()

        page = operator.get(unconfirmed.url).content.decode()
        assert "1 of 2 tenant(s) to <span class=\"mono\">0003</span>" in page
        assert f"{behind.slug}</td><td class=\"mono\">0002</td>" in page and "already there, untouched" in page
        assert "does <strong>not</strong> run the staged revisions" in page and "0004 expand" in page
        assert "Running upgrade 0002 -&gt; 0003" in page and "0003 -&gt; 0004" not in page
        assert 'id="migrate-all-button"' in page

        confirmed = operator.post(reverse("tenants-migrate"), {"target": primary.pk, "confirmed": "yes"})
        job = run_here(Job.objects.get(kind=runners.MIGRATE))
        assert confirmed.url == reverse("job-detail", args=[job.pk])
        assert job.state == Job.State.SUCCEEDED and job.result["migrated_now"] == 1 and job.result["head"] == "0003"
        assert _version(primary, behind) == _version(primary, current) == "0003"  # staged revisions left alone
    finally:
        with superuser(fleet) as conn:
            for tenant in (behind, current):
                conn.execute(f'DROP SCHEMA IF EXISTS "{tenant.schema_name}" CASCADE')


@pytest.mark.browser
def test_it_asks_for_confirmation_of_migrate_all_in_the_browser(page, users, demo_targets, artifacts, fleet):
    from playwright.sync_api import expect

    from tests.console.test_browser import _log_in

    primary = demo_targets["demo-primary"]
    behind = _old_tenant(primary, unique_slug("web_behind"))
    try:
        _log_in(page, "operator")
        page.goto(reverse("tenants"))
        page.select_option("#migrate-form select", label="demo-primary")
        page.click("#migrate-form button")
        expect(page.locator("#migrate-all-plan h2")).to_contain_text("1 of 1 tenant(s) to 0003")
        expect(page.locator("#migrate-all-units tr[data-moves='yes']")).to_contain_text(behind.slug)
        page.screenshot(path=str(artifacts / "migrate-all-confirm.png"), full_page=True)
        page.click("#migrate-all-button")
        expect(page).to_have_url(re.compile(r"/jobs/\d+/$"))
        assert Job.objects.filter(kind=runners.MIGRATE, target=primary).count() == 1
    finally:
        with superuser(fleet) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{behind.schema_name}" CASCADE')


def test_it_says_why_the_staged_changes_cannot_be_listed_when_the_application_has_two_heads(client_as, tmp_path):
    import shutil

    from django.test import override_settings

    from tenants import migrator

    app = tmp_path / "app_schema"
    shutil.copytree(migrator.settings.TENANT_ALEMBIC_SCRIPT_LOCATION, app, ignore=shutil.ignore_patterns("__pycache__"))
    (app / "versions" / "0100_branch.py").write_text(
        'revision, down_revision, branch_labels, depends_on = "0100", "0003", None, None\n'
        "def upgrade():\n    pass\n")
    migrator.script_directory.cache_clear()
    try:
        with override_settings(TENANT_ALEMBIC_SCRIPT_LOCATION=str(app)):
            response = client_as("viewer").get(reverse("migrations"))
    finally:
        migrator.script_directory.cache_clear()
    page = response.content.decode()
    assert response.status_code == 200 and 'id="app-error"' in page and "2 heads" in page and "alembic merge" in page
    assert 'id="migration-jobs"' in page
