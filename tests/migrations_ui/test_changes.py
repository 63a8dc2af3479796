"""The "New change" form against the suite's real demo primary: pickers from its catalog (pgbench's
tables), a NOT NULL column planned as the six lock-safe statements, and bad input refused with a
clear error and nothing saved; the pickers in a real browser."""

import re

import pytest
from playwright.sync_api import expect

from console.models import AuditEvent
from migrations_ui import plans
from migrations_ui.models import Change
from tests.pg.test_ddl import fresh_registry  # noqa: F401  (its autouse fixture)

NEW = "/migrations/changes/new/"


def _form(demo_targets, **fields):
    data = {"target": demo_targets["demo-primary"].pk, "database": "", "kind": "add_not_null_column",
            "table": "public.pgbench_accounts", "new_column": "has_balance", "column_type": "boolean",
            "backfill_expression": "abalance > 0"}
    data.update(fields)
    return data


def test_it_lists_the_targets_tables_and_the_chosen_tables_columns(client_as, demo_targets):
    client = client_as("operator")
    primary = demo_targets["demo-primary"]

    page = client.get(NEW, {"target": primary.pk}).content.decode()
    columns = client.get(NEW, {"target": primary.pk, "kind": "set_not_null", "table": "public.pgbench_accounts"},
                         headers={"HX-Request": "true"}).content.decode()

    for table in ("pgbench_accounts", "pgbench_branches", "pgbench_history", "pgbench_tellers"):
        assert f'<option value="public.{table}"' in page
    assert 'id="change-pickers"' in columns and "<html" not in columns  # the partial alone
    for column in ("aid", "bid", "abalance", "filler"):
        assert f'<option value="{column}"' in columns
    assert '<option value="tid"' not in columns  # pgbench_tellers' column, not this table's
    assert '<option value="demo-replica"' not in page and "demo-replica</option>" not in page  # primaries only


def test_it_plans_a_not_null_column_as_the_six_lock_safe_statements(client_as, demo_targets):
    client = client_as("operator")

    response = client.post(NEW, _form(demo_targets))

    change = Change.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/migrations/changes/{change.pk}/"
    assert (change.kind, change.table, change.column, change.column_type, change.pk_column) == (
        "add_not_null_column", "pgbench_accounts", "has_balance", "boolean", "aid")
    assert change.backfill_expression == "abalance > 0"
    stages, squawk_ran = plans.change_plan(change)
    assert [s.name for s in stages] == ["expand", "backfill", "validate", "contract"]
    statements = [(stage.name, s.sql, [lock.describe() for lock in s.locks]) for stage in stages for s in stage.statements]
    table = '"public"."pgbench_accounts"'
    check = '"pgbench_accounts_has_balance_not_null"'
    assert statements == [
        ("expand", f'ALTER TABLE {table} ADD COLUMN IF NOT EXISTS "has_balance" boolean;', ["ACCESS EXCLUSIVE (brief)"]),
        ("backfill", f'UPDATE {table} SET "has_balance" = abalance > 0 WHERE "aid" > %(after)s AND "aid" <= %(upto)s '
                     'AND ("has_balance" IS NULL)', ["ROW EXCLUSIVE"]),
        ("validate", f'ALTER TABLE {table} ADD CONSTRAINT {check} CHECK ("has_balance" IS NOT NULL) NOT VALID;',
         ["ACCESS EXCLUSIVE (brief)"]),
        ("validate", f"ALTER TABLE {table} VALIDATE CONSTRAINT {check};", ["SHARE UPDATE EXCLUSIVE"]),
        ("contract", f'ALTER TABLE {table} ALTER COLUMN "has_balance" SET NOT NULL;', ["ACCESS EXCLUSIVE"]),
        ("contract", f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {check};", ["ACCESS EXCLUSIVE (brief)"]),
    ]
    assert not [f for stage in stages for f in stage.flagged], "the lock-safe sequence has nothing unsafe"
    plan_page = client.get(response["Location"]).content.decode()
    for stage in ("expand", "backfill", "validate", "contract"):
        assert f'id="request-{stage}"' in plan_page
    assert plan_page.index("ADD COLUMN IF NOT EXISTS") < plan_page.index("NOT VALID") < plan_page.index(
        "VALIDATE CONSTRAINT") < plan_page.index("SET NOT NULL") < plan_page.index("DROP CONSTRAINT")
    assert "SHARE UPDATE EXCLUSIVE" in plan_page
    assert AuditEvent.objects.filter(action="migrations.change_create", outcome="ok").exists()


def test_it_plans_a_foreign_key_as_a_concurrent_index_then_not_valid_then_validate(client_as, demo_targets):
    client = client_as("operator")

    client.post(NEW, _form(demo_targets, kind="add_foreign_key", table="public.pgbench_history", column="aid",
                           ref_table="public.pgbench_accounts", ref_column="aid"))

    change = Change.objects.get()
    stages, _ran = plans.change_plan(change)
    kinds = [(stage.name, s.locks[-1].what, s.locks[-1].level) for stage in stages for s in stage.statements]
    assert kinds == [
        ("expand", "CREATE INDEX CONCURRENTLY", "SHARE UPDATE EXCLUSIVE"),
        ("expand", "ALTER TABLE ADD FOREIGN KEY NOT VALID", "SHARE ROW EXCLUSIVE"),
        ("validate", "ALTER TABLE VALIDATE CONSTRAINT", "SHARE UPDATE EXCLUSIVE"),
    ]
    assert "REFERENCES \"public\".\"pgbench_accounts\" (\"aid\") NOT VALID" in stages[0].statements[1].sql


@pytest.mark.parametrize("fields, field, message", [
    ({"table": "public.no_such_table"}, "table", "There is no table public.no_such_table"),
    ({"kind": "set_not_null", "column": "no_such_column"}, "column", "has no column no_such_column"),
    ({"kind": "add_index", "index_columns": ["no_such_column"]}, "index_columns", "no_such_column"),
    ({"new_column": "abalance"}, "new_column", "already has a column abalance"),
    ({"column_type": "int; DROP TABLE x"}, "column_type", "is not a column type"),
    ({"backfill_expression": "1; DROP TABLE pgbench_history"}, "backfill_expression", "without semicolons"),
    ({"backfill_expression": "(WITH gone AS (DELETE FROM pgbench_history RETURNING 1) SELECT true)"},
     "backfill_expression", "a subquery that writes (DELETE)"),
    ({"backfill_expression": "no_such_column > 0"}, None, 'column "no_such_column" does not exist'),
    ({"backfill_expression": "'yes please'"}, None, "invalid input syntax for type boolean"),
    ({"backfill_expression": "NULL::boolean"}, "backfill_expression", "cannot be NULL"),  # attack finding 23
])
def test_it_refuses_bad_input_with_a_clear_error_and_saves_nothing(client_as, demo_targets, fields, field, message):
    client = client_as("operator")

    response = client.post(NEW, _form(demo_targets, **fields))

    assert response.status_code == 400
    form = response.context["form"]
    errors = form.errors.get(field or "__all__", [])
    assert any(message in e for e in errors), form.errors
    assert message.replace("'", "&#x27;").replace('"', "&quot;") in response.content.decode()
    assert not Change.objects.exists()
    assert AuditEvent.objects.filter(action="migrations.change_create", outcome="failed").exists()


def test_it_lets_only_operators_open_the_form(client_as, demo_targets):
    assert client_as("viewer").get(NEW).status_code == 403
    assert client_as("operator").get(NEW).status_code == 200


def test_it_picks_table_and_columns_in_a_browser_and_shows_the_plan(page, users, demo_targets, artifacts,
                                                                      transactional_db):
    page.goto(NEW)
    page.fill("#id_username", "operator")
    page.fill("#id_password", "operator-pw-123")
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("New change")
    page.wait_for_load_state("load")  # htmx has processed the page

    def pickers_reloaded():  # htmx swapped the pickers in and is done with them
        expect(page.locator("#change-form .htmx-request, #change-pickers.htmx-added, .htmx-settling")).to_have_count(0)

    expect(page.locator("#id_column")).to_have_count(0)  # a new column is the first kind: no column picker
    page.select_option("#id_target", label="demo-primary")
    expect(page.locator("#id_table option[value='public.pgbench_accounts']")).to_have_count(1)
    pickers_reloaded()
    page.select_option("#id_kind", "set_not_null")
    expect(page.locator("#id_column")).to_have_count(1)
    expect(page.locator("#id_new_column")).to_have_count(0)
    pickers_reloaded()
    page.select_option("#id_table", "public.pgbench_accounts")
    expect(page.locator("#id_column option[value='abalance']")).to_have_count(1)
    pickers_reloaded()
    page.select_option("#id_column", "filler")
    page.fill("#id_backfill_expression", "'-'")
    page.screenshot(path=str(artifacts / "change-new.png"), full_page=True)
    page.click("button:has-text('Save and show the plan')")

    expect(page.locator("h1")).to_have_text(re.compile(r"Plan of change #\d+"))
    expect(page.locator("#facts-rows")).to_be_visible()  # the table's facts, read after the page
    expect(page.locator("#stage-contract")).to_contain_text("SET NOT NULL")
    page.screenshot(path=str(artifacts / "change-plan.png"), full_page=True)
