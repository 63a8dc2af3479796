"""The slow-query page: pg_stat_statements deltas over a window with the console's own logins
hidden by default, utility statements added up into one row, filters by database and user, the
time share, block and cache columns, and links to a statement's history and to EXPLAIN."""

import html
import re

import pytest

from monitors import panels, samplers
from tests.console.test_browser import _log_in
from tests.monitors.test_statements_trust import _pgbench
from tests.servers import application, superuser

PGBENCH_UPDATE = "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2"
OWN_MARKER = "console_own_marker"
OTHER_DB_MARKER = "other_db_marker"


@pytest.fixture
def statements_scene(transactional_db, demo_targets, fleet):
    """Two pg_stat_statements snapshots of the demo primary around: a pgbench run as postgres, a
    statement of the console's change login (fleet_owner), and one in another database."""
    primary = demo_targets["demo-primary"]
    assert samplers.sample_statements_round([primary])["ok"] == 1  # the baseline
    _pgbench(fleet, clients=2, transactions=20)
    with application(fleet) as owner:
        owner.execute(f"SELECT count(*) AS {OWN_MARKER} FROM pgbench_branches WHERE bid > %s", (0,))
    with superuser(fleet, dbname="postgres") as admin:
        admin.execute(f"SELECT count(*) AS {OTHER_DB_MARKER} FROM pg_class WHERE relpages > %s", (0,))
    assert samplers.sample_statements_round([primary])["ok"] == 1
    return primary


def _rows(body: str) -> list[dict]:
    table = re.search(r'<table class="grid compact" id="statements">(.*?)</table>', body, re.S).group(1)
    rows = []
    for attrs, cells in re.findall(r"<tr (data-queryid[^>]*)>(.*?)</tr>", table, re.S):
        row = dict(re.findall(r'data-([a-z]+)="([^"]*)"', attrs))
        row["cells"] = [html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", cells, re.S)]
        row["html"] = cells
        rows.append(row)
    return rows


def test_it_hides_the_consoles_own_statements_by_default_and_shows_them_with_the_toggle(statements_scene, client_as):
    client = client_as("viewer")
    body = client.get(f"/fleet/targets/{statements_scene.pk}/queries/").content.decode()
    rows = _rows(body)
    assert PGBENCH_UPDATE in body
    assert 'class="mainnav"' in body, "the page is the logged-in user's (the filter's user is another name)"
    assert OWN_MARKER not in body
    assert {r["user"] for r in rows}.isdisjoint({"fleet_monitor", "fleet_owner"})
    assert re.search(r"hidden: \d+ statements? of the console's own logins \(fleet_monitor, fleet_owner\)", body)
    toggle = re.search(r"""<a id="own-toggle" href="([^"]+)">Show the console's own statements</a>""", body).group(1)

    shown = client.get(f"/fleet/targets/{statements_scene.pk}/queries/" + html.unescape(toggle)).content.decode()
    assert OWN_MARKER in shown
    assert {"fleet_owner", "fleet_monitor"} <= {r["user"] for r in _rows(shown)}
    assert "Hide the console's own statements" in shown


def test_it_groups_utility_statements_into_one_row(statements_scene, client_as):
    body = client_as("viewer").get(f"/fleet/targets/{statements_scene.pk}/queries/?own=shown").content.decode()
    utility = re.search(r'<tr id="utility-statements"[^>]*>(.*?)</tr>', body, re.S)
    assert utility, "a utility statements row"
    assert "BEGIN, COMMIT" in utility.group(1)
    texts = [r["cells"][0] for r in _rows(body)]
    assert not [t for t in texts if re.match(r"(BEGIN|END|COMMIT|SET|SHOW|SAVEPOINT|RELEASE)\b", t)]
    calls = int(re.findall(r"<td class=\"num\">(\d+)</td>", utility.group(1))[0])
    assert calls >= 80, "pgbench's 40 BEGIN and 40 END at least"


def test_it_classifies_utility_statements_by_parse_tree_and_by_prefix_when_truncated():
    for query in ("BEGIN", "COMMIT", "END", "ROLLBACK", "SET search_path = $1", "SAVEPOINT s", "RELEASE SAVEPOINT s",
                  "SHOW work_mem", "DISCARD ALL", "DEALLOCATE p1", "SET application_name = 'a very long and trunc"):
        assert panels.is_utility(query), query
    for query in ("SELECT $1", PGBENCH_UPDATE, "SELECT set_config($1, $2, $3)", "SETTLE"):
        assert not panels.is_utility(query), query


def test_it_filters_by_user_and_by_database(statements_scene, client_as):
    client = client_as("viewer")
    base = f"/fleet/targets/{statements_scene.pk}/queries/?own=shown"
    page = client.get(base).content.decode()
    assert '<option>postgres</option>' in page and '<option>fleet_owner</option>' in page
    assert '<option>demo</option>' in page
    by_user = _rows(client.get(base + "&user=fleet_owner").content.decode())
    assert by_user and {r["user"] for r in by_user} == {"fleet_owner"}
    assert any(OWN_MARKER in r["cells"][0] for r in by_user)
    in_postgres = client.get(base + "&database=postgres").content.decode()
    assert OTHER_DB_MARKER in in_postgres and PGBENCH_UPDATE not in in_postgres
    assert {r["database"] for r in _rows(in_postgres)} == {"postgres"}
    fragment = client.get(base + "&database=demo", HTTP_HX_REQUEST="true").content.decode()
    assert fragment.lstrip().startswith('<div id="slow-queries">') and OTHER_DB_MARKER not in fragment


def test_it_shows_time_share_calls_mean_max_rows_blocks_and_cache_hits(statements_scene, client_as):
    body = client_as("viewer").get(f"/fleet/targets/{statements_scene.pk}/queries/").content.decode()
    headers = re.findall(r"<th[^>]*>(.*?)</th>", re.search(r'id="statements">\s*<thead>(.*?)</thead>', body, re.S).group(1))
    assert headers[:11] == ["query", "database", "user", "% of total time", "calls", "mean", "max", "rows",
                            "shared blocks hit", "shared blocks read", "cache hit"]
    update = next(r for r in _rows(body) if r["cells"][0] == PGBENCH_UPDATE)
    _query, database, user, share, calls, mean, maximum, n_rows, hit, read, cache = update["cells"][:11]
    assert (database, user, calls, n_rows) == ("demo", "postgres", "40", "40")
    assert 0 < float(share.rstrip(" %")) <= 100
    assert float(mean.split()[0]) > 0 and float(maximum.split()[0]) >= float(mean.split()[0])
    assert int(hit) + int(read) > 0 and 0 <= float(cache.rstrip(" %")) <= 100
    assert "the largest seen at the window" in body


def test_it_links_each_statement_to_its_history_and_to_explain_prefilled(statements_scene, client_as):
    client = client_as("operator")
    body = client.get(f"/fleet/targets/{statements_scene.pk}/queries/").content.decode()
    update = next(r for r in _rows(body) if r["cells"][0] == PGBENCH_UPDATE)
    history = re.search(r'<a href="([^"]+)">history</a>', update["html"]).group(1)
    assert history == f"/fleet/targets/{statements_scene.pk}/queries/{update['queryid']}/"
    assert PGBENCH_UPDATE in html.unescape(client.get(history).content.decode())
    explain = html.unescape(re.search(r'<a class="explain-link" href="([^"]+)">EXPLAIN</a>', update["html"]).group(1))
    assert explain == f"/fleet/targets/{statements_scene.pk}/?explain={update['queryid']}#panel-explain"
    target_page = client.get(explain.split("#")[0]).content.decode()
    textarea = re.search(r'<textarea name="sql"[^>]*>(.*?)</textarea>', target_page, re.S).group(1)
    assert html.unescape(textarea) == PGBENCH_UPDATE
    assert "placeholders like $1 must be replaced by values before EXPLAIN runs" in target_page
    assert f'href="/fleet/targets/{statements_scene.pk}/queries/"' in target_page, "linked from the slow-queries card"
    plain = client.get(f"/fleet/targets/{statements_scene.pk}/").content.decode()
    assert re.search(r'<textarea name="sql"[^>]*></textarea>', plain) and "placeholders like $1" not in plain


def test_it_draws_the_slow_query_page(statements_scene, page, users, artifacts):
    _log_in(page, "operator")
    page.goto(f"/fleet/targets/{statements_scene.pk}/queries/")
    page.locator("#utility-statements").wait_for()
    page.screenshot(path=str(artifacts / "slow-queries.png"), full_page=True)
    page.select_option("select[name=user]", "postgres")
    page.locator("#statements tbody tr[data-user]").first.wait_for()
    assert set(page.locator("#statements tbody tr[data-user]").evaluate_all("rows => rows.map(r => r.dataset.user)")) == {"postgres"}
    page.screenshot(path=str(artifacts / "slow-queries-user-postgres.png"), full_page=True)
    page.locator(f"#statements tr[data-queryid] a.explain-link").first.click()
    textarea = page.locator("#panel-explain textarea[name=sql]")
    textarea.wait_for()
    assert "$1" in textarea.input_value()
    page.locator("#explain-placeholders").scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "slow-queries-explain-prefilled.png"))
