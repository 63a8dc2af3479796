"""The overview shows each target's load from samples: TPS and its trend, active and waiting
sessions, the longest query and oldest transaction, cache hits, size, XID age, version, uptime;
every column header sorts the whole fleet and keeps the tag filter."""

import os
import re
import subprocess
from datetime import timedelta

from django.utils import timezone

from monitors import panels, samplers, series
from monitors.models import TargetState
from scripts.localfleet import PG_BIN
from tests.console.test_browser import _log_in
from tests.servers import superuser as _connect
from tests.waiting import wait_for_backend, wait_until

# Short transactions that keep their sessions active (in pg_sleep) most of the time.
PGBENCH_SCRIPT = "\\set aid random(1, 100000)\nUPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;\nSELECT pg_sleep(0.05);\n"


def _start_pgbench(fleet, tmp_path, clients: int = 4, seconds: int = 120) -> subprocess.Popen:
    script = tmp_path / "load.sql"
    script.write_text(PGBENCH_SCRIPT)
    return subprocess.Popen(
        [str(PG_BIN / "pgbench"), "-n", "-c", str(clients), "-T", str(seconds), "-f", str(script),
         "-h", "127.0.0.1", "-p", str(fleet.port("primary")), "-U", "postgres", "demo"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PGPASSWORD": fleet.superuser_password},
    )


def _xact_total(conn) -> int:
    return conn.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'demo'").fetchone()[0]


def _row(body: str, name: str) -> str:
    return re.search(rf'<tr data-target="{name}">(.*?)</tr>', body, re.S).group(1)


def _cell(row: str, css: str) -> str:
    return re.sub(r"<[^>]+>", "", re.search(rf'<td class="[^"]*\b{css}\b[^"]*">(.*?)</td>', row, re.S).group(1)).strip()


def test_it_shows_tps_and_active_sessions_under_pgbench_after_one_sampling_round(transactional_db, demo_targets, fleet,
                                                                                   client_as, tmp_path):
    primary = demo_targets["demo-primary"]
    samplers.sample_fast_round([primary])  # the baseline of the transaction counter
    with _connect(fleet) as admin:
        before = _xact_total(admin)
        bench = _start_pgbench(fleet, tmp_path)
        try:
            wait_for_backend(admin, "application_name = 'pgbench' AND state = 'active'", what="pgbench running")
            wait_until(lambda: _xact_total(admin) > before, 30, "pgbench's commits counted in pg_stat_database")

            summary = samplers.sample_fast_round([primary])  # one round, under load
        finally:
            bench.terminate()
            bench.wait()

    assert (summary["ok"], summary["failed"]) == (1, 0)
    row = _row(client_as("viewer").get("/fleet/").content.decode(), "demo-primary")
    tps = float(re.search(r"([\d.,]+) tx/s", _cell(row, "tps")).group(1).replace(",", ""))
    active = int(re.search(r"(\d+) active", _cell(row, "sessions")).group(1))
    assert tps > 0
    assert active > 0
    state = TargetState.objects.get(target=primary)
    assert state.oldest_xact_s is not None and state.oldest_xact_s >= 0
    assert 0 < state.cache_hit_pct <= 100
    assert state.database_size_bytes > 1024 * 1024 and _cell(row, "size").endswith("MB")
    assert 0 < state.xid_age_pct < 100
    assert state.server_started_at < timezone.now()
    primary.refresh_from_db()
    assert _cell(row, "version") == primary.server_version
    assert re.fullmatch(r"\d+ (s|min|h \d+ min|d)", _cell(row, "uptime"))


def _scene(demo_targets):
    """Three database targets with distinct figures; the bouncer has none."""
    now = timezone.now()
    figures = {
        "demo-primary": dict(tps=50.0, connections_by_state={"active": 3}, waiting_on_locks=1, longest_query_s=5.0,
                             oldest_xact_s=30.0, cache_hit_pct=99.0, database_size_bytes=30 << 20, xid_age_pct=0.5,
                             server_started_at=now - timedelta(days=3)),
        "demo-replica": dict(tps=5.0, connections_by_state={"active": 1}, waiting_on_locks=0, longest_query_s=60.0,
                             oldest_xact_s=2.0, cache_hit_pct=80.0, database_size_bytes=10 << 20, xid_age_pct=2.0,
                             server_started_at=now - timedelta(hours=1)),
        "demo-scratch": dict(tps=500.0, connections_by_state={"active": 9}, waiting_on_locks=0, longest_query_s=1.0,
                             oldest_xact_s=300.0, cache_hit_pct=90.0, database_size_bytes=1 << 20, xid_age_pct=9.0,
                             server_started_at=now - timedelta(minutes=5)),
    }
    versions = {"demo-primary": "17.2", "demo-replica": "16.4", "demo-scratch": "9.6.24"}
    for name, values in figures.items():
        TargetState.objects.update_or_create(target=demo_targets[name], defaults=values)
        type(demo_targets[name]).objects.filter(pk=demo_targets[name].pk).update(server_version=versions[name])
    for i, value in enumerate((10.0, 30.0, 50.0)):
        series.record(demo_targets["demo-primary"], {"tps": value}, at=now - timedelta(seconds=30 - i * 10))


EXPECTED_FIRST = {  # sort key: the database targets in the order the column sorts them
    "tps": ["demo-scratch", "demo-primary", "demo-replica"],
    "sessions": ["demo-scratch", "demo-primary", "demo-replica"],
    "longest_query": ["demo-replica", "demo-primary", "demo-scratch"],
    "oldest_xact": ["demo-scratch", "demo-primary", "demo-replica"],
    "cache_hit": ["demo-replica", "demo-scratch", "demo-primary"],
    "size": ["demo-primary", "demo-replica", "demo-scratch"],
    "xid_age": ["demo-scratch", "demo-replica", "demo-primary"],
    "version": ["demo-scratch", "demo-replica", "demo-primary"],
    "uptime": ["demo-scratch", "demo-replica", "demo-primary"],
    "name": ["demo-primary", "demo-replica", "demo-scratch"],
}


def test_it_sorts_by_every_column_header_and_keeps_the_tag_filter(db, demo_targets, client_as):
    _scene(demo_targets)
    type(demo_targets["demo-primary"]).objects.exclude(name="demo-bouncer").update(tags=["prod"])
    client = client_as("viewer")
    body = client.get("/fleet/?tag=prod").content.decode()
    headers = re.findall(r'<a class="sort" data-sort="([a-z_]+)" href="([^"]+)"', body)
    assert [key for key, _href in headers] == list(panels.SORTS)
    for key, href in headers:
        assert href == f"?sort={key}&tag=prod"
        response = client.get("/fleet/" + href)
        assert response.status_code == 200
        page = response.content.decode()
        assert f'data-sort="{key}" href="?sort={key}&tag=prod" aria-current="true"' in page
        order = [name for name in re.findall(r'<tr data-target="([^"]+)">', page) if name != "demo-bouncer"]
        if key in EXPECTED_FIRST:
            assert order == EXPECTED_FIRST[key], key
        assert 'data-target="demo-bouncer"' not in page, "the tag filter is kept"


def test_it_shows_the_tps_trend_with_its_scale_and_the_load_columns(db, demo_targets, client_as):
    _scene(demo_targets)
    row = _row(client_as("viewer").get("/fleet/").content.decode(), "demo-primary")
    assert "<svg" in _cell_html(row, "tps") and "10–50 tx/s" in _cell(row, "tps")
    assert _cell(row, "sessions") == "3 active,1 waiting"
    assert _cell(row, "longest-query") == "5 s"
    assert _cell(row, "oldest-xact") == "30 s"
    assert _cell(row, "cache-hit") == "99.0 %"
    assert _cell(row, "size") == "30.0 MB"
    assert _cell(row, "xid-age") == "0.50 %"
    assert _cell(row, "version") == "17.2"
    assert _cell(row, "uptime") == "3 d"


def _cell_html(row: str, css: str) -> str:
    return re.search(rf'<td class="[^"]*\b{css}\b[^"]*">(.*?)</td>', row, re.S).group(1)


def test_it_draws_the_load_columns_in_the_browser(transactional_db, page, users, demo_targets, artifacts):
    samplers.sample_fast_round()
    _scene(demo_targets)
    _log_in(page, "viewer")
    page.goto("/fleet/?sort=tps")
    page.locator('tr[data-target="demo-primary"] td.tps svg').wait_for()
    page.screenshot(path=str(artifacts / "overview-load.png"), full_page=True)
    assert page.locator("th a.sort").count() == len(panels.SORTS)


def test_it_reads_the_tps_trends_of_the_page_shown(db, demo_targets, client_as, settings):
    settings.FLEET_OVERVIEW_PAGE_SIZE = 1
    _scene(demo_targets)
    client = client_as("viewer")
    first = client.get("/fleet/?sort=tps").content.decode()
    second = client.get("/fleet/?sort=tps&page=2").content.decode()
    assert re.findall(r'<tr data-target="([^"]+)">', first) == ["demo-scratch"]
    assert "<svg" not in _cell_html(_row(first, "demo-scratch"), "tps"), "no tps points recorded for it"
    assert "<svg" in _cell_html(_row(second, "demo-primary"), "tps") and "10–50 tx/s" in _cell(_row(second, "demo-primary"), "tps")
