"""The whole flow of a staged NOT NULL change in a real browser, on real tenants and the suite's
worker: an operator requests each stage's rollout, an approver (someone else) approves it, and the
grid follows the canary, then the waves, through expand, backfill, validate and contract."""

import pytest
from django.urls import reverse
from playwright.sync_api import expect
from sqlalchemy import text

from console import engines
from console.models import Job
from console.pg import tenancy
from migrations_ui.models import Rollout
from tenants import migrator
from tests.console.test_browser import _log_in
from tests.servers import superuser
from tests.tenants.helpers import onboard, unique_slug

pytestmark = [pytest.mark.browser, pytest.mark.worker]
STATUS = "documents_status_add_not_null_column"


def _documents(tenant, rows: int) -> None:
    with engines.connect(tenant.target, credential="change") as conn:
        tenancy.bind(conn, schema=tenant.schema_name, tenant_key=tenant.slug)
        conn.execute(text("INSERT INTO users (id, email, full_name) VALUES (1, 'a@example.com', 'A')"))
        folder = conn.execute(text("SELECT id FROM folders LIMIT 1")).scalar_one()
        conn.execute(text("INSERT INTO documents (id, folder_id, owner_id, title, deleted_at) SELECT g, :f, 1,"
                          " 'doc ' || g, CASE WHEN g % 4 = 0 THEN now() END FROM generate_series(1, :n) g"),
                     {"f": folder, "n": rows})


def _as(page, role):
    page.context.clear_cookies()
    _log_in(page, role)


def test_it_rolls_a_staged_not_null_change_out_stage_by_stage(page, users, demo_targets, live_worker, artifacts,
                                                              fleet):
    tenants = onboard(demo_targets["demo-primary"], *[(unique_slug(f"web{n}"), f"Web {n}") for n in range(4)])
    for n, tenant in enumerate(tenants):
        _documents(tenant, 200 * (n + 1))
    keys = [f"demo-primary/{t.slug}" for t in tenants]
    url = reverse("staged-change", args=[STATUS])
    try:
        for index, stage in enumerate(("expand", "backfill", "validate", "contract")):
            _as(page, "operator")
            page.goto(url)
            expect(page.locator("#rollout-form h2")).to_contain_text(f"Roll out {stage}")
            if stage == "expand":
                page.select_option("#rollout-canary", keys[2])
                page.fill("#rollout-waves", "1,2")
                page.fill("#rollout-parallelism", "2")
            page.click("#rollout-request")
            expect(page.locator(".messages")).to_contain_text("requested")
            expect(page.locator(f"#approval-{stage}")).to_have_text("Waiting")
            if stage == "expand":
                page.screenshot(path=str(artifacts / "rollout-requested.png"), full_page=True)

            _as(page, "approver")
            page.goto(url)
            page.click(f"#approval-{stage}")
            expect(page.locator("#approval-shown")).to_contain_text(keys[0])
            page.fill("input[name=comment]", f"{stage}: read the SQL and the waves")
            if stage == "expand":
                page.screenshot(path=str(artifacts / "rollout-approval.png"), full_page=True)
            page.click("#approve-button")

            page.goto(url)  # the grid follows the rollout live, then stops polling
            done = page.locator(f"#rollout-grid td[data-stage='{index}'][data-state='done']")
            expect(done).to_have_count(4, timeout=90_000)
            expect(page.locator("#rollout-live")).not_to_have_attribute("hx-trigger", "every 1s", timeout=30_000)
            if stage == "expand":
                canary = page.locator(f"#rollout-grid tr[data-tenant='{keys[2]}'] td[data-stage='0'] [data-wave]")
                expect(canary).to_have_text("canary")
                expect(page.locator("#rollout-grid td[data-stage='0'] [data-wave='2']")).to_have_count(2)
            page.screenshot(path=str(artifacts / f"rollout-{stage}.png"), full_page=True)

        expect(page.locator("#job-contract")).to_have_text("Succeeded")
        first = Rollout.objects.get(stage="expand").job
        log = [line.message for line in first.log_lines.all()]
        assert next(m for m in log if "0003 -> 0004" in m).startswith(keys[2])  # the canary went first
        assert all(r.job.state == Job.State.SUCCEEDED for r in Rollout.objects.all())
        with superuser(fleet) as conn:
            for n, tenant in enumerate(tenants):
                nulls, deleted, not_null = conn.execute(
                    f'SELECT count(*) FILTER (WHERE status IS NULL), count(*) FILTER (WHERE status = \'deleted\'),'
                    f' (SELECT attnotnull FROM pg_attribute WHERE attrelid = \'"{tenant.schema_name}".documents\'::regclass'
                    f" AND attname = 'status') FROM \"{tenant.schema_name}\".documents").fetchone()
                assert (nulls, deleted, not_null) == (0, 50 * (n + 1), True)
        with engines.connect(tenants[0].target, credential="change", rollback=True) as conn:
            assert {migrator.current_version(conn, t.schema_name) for t in tenants} == {"0007"}
        page.goto(reverse("migrations"))
        expect(page.locator("[data-change='documents_status_add_not_null_column']")).to_contain_text("contract: 4")
        page.screenshot(path=str(artifacts / "migrations-after-rollout.png"), full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})  # the grid scrolls inside its card
        page.goto(url)
        assert page.evaluate("document.documentElement.scrollWidth") == 390
        page.screenshot(path=str(artifacts / "rollout-narrow.png"), full_page=True)
    finally:
        with superuser(fleet) as conn:
            for tenant in tenants:
                conn.execute(f'DROP SCHEMA IF EXISTS "{tenant.schema_name}" CASCADE')
