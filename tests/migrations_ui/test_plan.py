"""Plan pages: the lock of each statement from its parse tree, squawk's and the console's findings,
the demo application's revision 0003 flagged, the table's facts read from the real demo primary,
overrides with a written reason, and the approval of a stage bound to its exact SQL."""

import pytest

from console import approvals
from console.models import Approval, Job
from console.pg import locks
from migrations_ui import changes, plans
from migrations_ui.models import Change
from tests.pg.test_ddl import fresh_registry  # noqa: F401  (its autouse fixture)
from tests.servers import superuser


@pytest.fixture
def change(demo_targets, users):
    def make(**fields):
        values = {"target": demo_targets["demo-primary"], "kind": "add_not_null_column", "table": "pgbench_accounts",
                  "column": "has_balance", "column_type": "boolean", "backfill_expression": "abalance > 0",
                  "pk_column": "aid", **fields}
        return changes.create(user=users["operator"], **values)

    return make


def _finding_rules(statement) -> set[str]:
    return {f.rule for f in statement.flagged}


def test_it_reads_each_statements_lock_from_its_parse_tree():
    script = """
        ALTER TABLE t ADD COLUMN c int;
        ALTER TABLE t ADD CONSTRAINT k CHECK (c IS NOT NULL) NOT VALID;
        ALTER TABLE t VALIDATE CONSTRAINT k;
        ALTER TABLE t ALTER COLUMN c SET NOT NULL;
        CREATE INDEX CONCURRENTLY i ON t (c);
        CREATE INDEX j ON t (c);
        ALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (c) REFERENCES u (id);
        ALTER TABLE t ALTER COLUMN c TYPE bigint;
    """
    assert [(lock.level, lock.brief) for lock in locks.locks_in(script)] == [
        ("ACCESS EXCLUSIVE", True), ("ACCESS EXCLUSIVE", True), ("SHARE UPDATE EXCLUSIVE", False),
        ("ACCESS EXCLUSIVE", False), ("SHARE UPDATE EXCLUSIVE", False), ("SHARE", False),
        ("SHARE ROW EXCLUSIVE", False), ("ACCESS EXCLUSIVE", False),
    ]


def test_it_flags_revision_0003s_plain_index_and_foreign_key_without_not_valid(client_as):
    response = client_as("viewer").get("/migrations/app/", {"from": "0002"})

    planned = response.context["planned"]
    assert [r.revision for r in planned][:2] == ["0002 -> 0003", "0003 -> 0004"]
    by_start = {s.sql.split(" ON ")[0].split(" ADD ")[0]: s for s in planned[0].statements}
    index = by_start["CREATE INDEX ix_documents_active_title"]
    foreign_key = next(s for s in planned[0].statements if "FOREIGN KEY" in s.sql)
    assert index.locks[0].level == "SHARE"
    assert {"non-concurrent-index", "require-concurrent-index-creation"} <= _finding_rules(index)
    assert foreign_key.locks[0].level == "SHARE ROW EXCLUSIVE" and not foreign_key.locks[0].brief
    assert {"constraint-without-not-valid", "constraint-missing-not-valid", "adding-foreign-key-constraint"} <= \
        _finding_rules(foreign_key)
    assert "no-lock-timeout" in _finding_rules(index)
    page = response.content.decode()
    assert 'id="plan-flagged"' in page and 'data-rule="non-concurrent-index"' in page
    assert 'data-rule="adding-foreign-key-constraint"' in page  # squawk's own words, from its JSON
    assert 'id="squawk-missing"' not in page


def test_it_lints_from_an_empty_schema_without_flagging_indexes_of_tables_a_revision_creates(client_as):
    response = client_as("viewer").get("/migrations/app/")

    planned = response.context["planned"]
    assert [r.revision for r in planned][:4] == ["-> 0001", "0001 -> 0002", "0002 -> 0003", "0003 -> 0004"]
    assert not planned[0].flagged and not planned[1].flagged  # every index is on a table made by its revision
    assert {f.rule for _s, f in planned[2].flagged} >= {"non-concurrent-index", "constraint-without-not-valid"}
    # The staged revisions after it run console/pg/ddl.py's lock-safe operations: nothing flagged.
    assert [r.revision.split()[-1] for r in planned[3:]] == ["0004", "0005", "0006", "0007", "0008", "0009"]
    assert not [f for r in planned[3:] for _s, f in r.flagged]
    assert planned[3].staged.stage == "expand" and planned[2].staged is None
    assert 'href="/migrations/staged/documents_status_add_not_null_column/"' in response.content.decode()


def test_it_shows_the_tables_size_and_rows_to_backfill_from_the_target(client_as, change, fleet):
    made = change()
    with superuser(fleet) as conn:
        rows = conn.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = 'public.pgbench_accounts'::regclass"
                            ).fetchone()[0]

    facts = client_as("viewer").get(f"/migrations/changes/{made.pk}/", {"facts": "1"},
                                    headers={"HX-Request": "true"})

    body = facts.content.decode()
    assert rows > 0
    assert f'<dd id="facts-rows">{rows}</dd>' in body and f"about {rows}" in body
    assert "MB" in body and 'id="facts-error"' not in body


def test_it_marks_squawks_rules_the_console_covers_and_flags_nothing_in_a_lock_safe_plan(change):
    stages, squawk_ran = plans.change_plan(change())

    findings = [f for stage in stages for s in stage.statements for f in s.findings]
    assert squawk_ran
    assert {f.rule for f in findings if f.source == "squawk"} >= {"prefer-robust-stmts", "ban-drop-constraint"}
    assert all(f.covered for f in findings if f.source == "squawk" and f.unsafe)
    assert not [f for f in findings if f.flags]


def test_it_needs_an_override_with_a_reason_which_the_approval_shows(client_as, change, users):
    made = change(column="row_number", column_type="bigserial", backfill_expression="aid")  # nextval(): a rewrite
    client = client_as("operator")

    refused = client.post(f"/migrations/changes/{made.pk}/stages/expand/request/", follow=True)
    no_reason = client.post(f"/migrations/changes/{made.pk}/override/", {"reason": "  "}, follow=True)

    assert "override them with a written reason first" in refused.content.decode()
    assert "Write why these statements may run" in no_reason.content.decode()
    assert not Approval.objects.exists()
    flagged = plans.change_plan(made)[0][0].flagged
    assert [f.rule for _s, f in flagged] == ["volatile-default"]

    reason = "pgbench_accounts is rewritten in a maintenance window tonight; nobody uses the demo then"
    client.post(f"/migrations/changes/{made.pk}/override/", {"reason": reason})
    client.post(f"/migrations/changes/{made.pk}/stages/expand/request/")

    made.refresh_from_db()
    assert (made.override_reason, made.override_by) == (reason, users["operator"])
    approval = Approval.objects.get()
    assert approval.kind == "migrations.stage" and approval.shown["stage"] == "expand"
    assert approval.shown["override_reason"] == reason and approval.shown["override_by"] == "operator"
    assert approval.shown["overrides"][0]["statement"].startswith('ALTER TABLE "public"."pgbench_accounts" ADD COLUMN')
    assert "volatile-default" in approval.shown["overrides"][0]["finding"]
    assert approval.shown["target"]["name"] == "demo-primary" and approval.shown["database"] == "demo"
    assert reason in approval.summary


def test_it_voids_the_stage_approval_when_its_sql_changes(change, users):
    made = change()
    approval = changes.request_stage_approval(made, "validate", users["operator"])
    assert approval.shown["statements"] == [
        'ALTER TABLE "public"."pgbench_accounts" ADD CONSTRAINT "pgbench_accounts_has_balance_not_null" '
        'CHECK ("has_balance" IS NOT NULL) NOT VALID;',
        'ALTER TABLE "public"."pgbench_accounts" VALIDATE CONSTRAINT "pgbench_accounts_has_balance_not_null";',
    ]

    Change.objects.filter(pk=made.pk).update(column="has_funds")
    made.refresh_from_db()

    assert approvals.digest_of(changes.stage_shown(made, "validate")) != approval.digest
    assert approvals.changed_since_request(approval)
    with pytest.raises(approvals.ApprovalRefused, match="changed since the request"):
        approvals.decide(approval, users["approver"], approve=True, shown_digest=approval.digest)
    approval.refresh_from_db()
    assert approval.decision == Approval.Decision.VOIDED


def test_it_lets_another_person_approve_a_stage_which_starts_its_job(client_as, change, users):
    made = change()
    client_as("operator").post(f"/migrations/changes/{made.pk}/stages/expand/request/")
    approval = Approval.objects.get()
    shown_to_approver = client_as("approver").get(f"/approvals/{approval.pk}/").content.decode()
    # The approvals page shows a list of statements a line each, as they run.
    assert 'ADD COLUMN IF NOT EXISTS &quot;has_balance&quot; boolean;' in shown_to_approver
    assert "demo-primary" in shown_to_approver and approval.digest in shown_to_approver

    approvals.decide(approval, users["approver"], approve=True, shown_digest=approval.digest)

    approval.refresh_from_db()
    assert approval.decision == Approval.Decision.APPROVED
    page = client_as("viewer").get(f"/migrations/changes/{made.pk}/").content.decode()
    assert "Approving a stage starts a job that runs it" in page and f"#{approval.pk}" in page
    assert Job.objects.get().params == {"change_id": made.pk, "stage": "expand", "approval": approval.pk}


def test_it_shows_the_plans_in_a_browser(page, users, change, artifacts, transactional_db):
    made = change(column="row_number", column_type="bigserial", backfill_expression="aid")
    page.goto(f"/migrations/changes/{made.pk}/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "operator-pw-123")
    page.click("button[type=submit]")
    page.wait_for_selector("#facts-rows")
    page.fill("#override-reason-input", "the demo table is rewritten in tonight's maintenance window")
    page.click("button:has-text('Record the override')")
    page.wait_for_selector("#override-reason")
    page.click("#request-expand")
    page.wait_for_selector("#stage-approvals [data-decision='pending']")
    page.screenshot(path=str(artifacts / "change-plan-override.png"), full_page=True)

    page.goto("/migrations/")
    page.click("#app-plan-link")
    page.select_option("#from", "0002")
    page.click("#app-plan-from button")
    page.wait_for_selector("[data-rule='non-concurrent-index']")
    page.screenshot(path=str(artifacts / "app-plan.png"), full_page=True)


def test_it_lints_a_tenants_pending_revisions_with_its_table_sizes(transactional_db, client_as, demo_targets, fleet):
    from tests.tenants.helpers import onboard, unique_slug

    (tenant,) = onboard(demo_targets["demo-primary"], (unique_slug("plan"), "Plan Ltd"))
    with superuser(fleet) as conn:
        conn.execute(f'ANALYZE "{tenant.schema_name}".documents')
        rows = conn.execute("SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = %s::regclass",
                            (f"{tenant.schema_name}.documents",)).fetchone()[0]

    at_head = client_as("viewer").get("/migrations/app/", {"tenant": tenant.pk})
    from_0002 = client_as("viewer").get("/migrations/app/", {"tenant": tenant.pk, "from": "0002"})

    # At the release revision: only the staged revisions are pending, and none is flagged.
    assert tenant.schema_version == "0003" and at_head.context["planned"][0].revision == "0003 -> 0004"
    assert not at_head.context["flagged"]
    assert from_0002.context["catalog"].read and 'id="catalog-unread"' not in from_0002.content.decode()
    index = next(s for s in from_0002.context["planned"][0].statements if s.sql.startswith("CREATE INDEX"))
    message = next(f.message for f in index.flagged if f.rule == "non-concurrent-index")
    assert f"about {rows:,} rows" in message


def test_it_flags_a_type_change_unless_the_catalog_says_it_only_widens_a_varchar():
    script = """
        ALTER TABLE documents ALTER COLUMN title TYPE varchar(400);
        ALTER TABLE documents ALTER COLUMN title TYPE text;
        ALTER TABLE documents ALTER COLUMN title TYPE varchar(10);
        ALTER TABLE documents ALTER COLUMN owner_id TYPE bigint;
        ALTER TABLE documents ADD COLUMN token uuid DEFAULT gen_random_uuid();
        ALTER TABLE documents ADD COLUMN seen_at timestamptz DEFAULT now();
    """
    catalog = plans.Catalog(column_types={("documents", "title"): "character varying(200)",
                                          ("documents", "owner_id"): "integer"}, read=True)

    known, _ran = plans.lint(script, catalog=catalog, lock_timeout=True)
    unknown, _ran = plans.lint(script, lock_timeout=True)

    rules = [{f.rule for f in s.flagged if f.source == "console"} for s in known]
    assert rules == [set(), set(), {"type-change-rewrites"}, {"type-change-rewrites"}, {"volatile-default"}, set()]
    assert all("type-change-rewrites" in {f.rule for f in s.flagged} for s in unknown[:4])
