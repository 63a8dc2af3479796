"""Time-series charts: the JSON each chart reads from the console's samples, and the page drawing them."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from console import engines
from monitors import charts, samplers, series
from monitors.models import MetricMinute, MetricPoint, StatementDelta
from tests.console.test_browser import _log_in
from tests.servers import superuser as _connect


def _points(target, metric, values_by_age_s, now):
    MetricPoint.objects.bulk_create(
        [MetricPoint(target=target, metric=metric, at=now - timedelta(seconds=age), value=value)
         for age, value in values_by_age_s]
    )


def test_it_serves_a_chart_with_its_unit_and_a_null_where_samples_are_missing(db, client_as, demo_targets, settings):
    settings.MONITOR_FAST_INTERVAL_S = 10.0
    primary = demo_targets["demo-primary"]
    now = timezone.now()
    # three samples, five silent minutes, two samples
    _points(primary, "replica_lag_s", [(600, 1.0), (590, 2.0), (580, 3.0), (280, 4.0), (270, 5.0)], now)
    _points(primary, "replica_lag_s", [(3 * 3600, 99.0)], now)  # outside the window

    body = client_as("viewer").get(f"/fleet/targets/{primary.pk}/series/replica_lag_s.json?window=15m").json()

    assert body["unit"] == "s" and body["window"] == "15m"
    assert body["to"] - body["from"] == pytest.approx(15 * 60, abs=5)
    assert [s["label"] for s in body["series"]] == ["replay lag"]
    assert body["series"][0]["values"] == [1.0, 2.0, 3.0, None, 4.0, 5.0]
    assert len(body["t"]) == 6 and body["t"] == sorted(body["t"])
    assert body["t"][3] == pytest.approx(body["t"][2] + 10)  # the null sits just after the last sample before the gap
    assert body["t"][0] == pytest.approx((now - timedelta(seconds=600)).timestamp())


def test_it_serves_connections_by_state_as_one_series_per_state(db, client_as, demo_targets):
    primary = demo_targets["demo-primary"]
    now = timezone.now()
    series.record(primary, {"connections_active": 2, "connections_idle": 5, "connections_idle_in_transaction": 1},
                  at=now - timedelta(seconds=20))
    series.record(primary, {"connections_active": 3, "connections_idle": 4}, at=now - timedelta(seconds=10))

    body = client_as("viewer").get(f"/fleet/targets/{primary.pk}/series/connections.json?window=1h").json()

    assert body["unit"] == "connections"
    assert {s["label"]: s["values"] for s in body["series"]} == {
        "active": [2.0, 3.0], "idle": [5.0, 4.0], "idle in transaction": [1.0, None]}


def test_it_reads_raw_points_for_short_windows_and_minute_averages_for_long_ones(db, client_as, demo_targets):
    primary = demo_targets["demo-primary"]
    now = timezone.now()
    minute = (now - timedelta(minutes=3)).replace(second=0, microsecond=0)
    # raw points and minute aggregates that disagree, to tell which one a window read
    _points(primary, "tps", [(150, 7.0)], now)
    MetricMinute.objects.create(target=primary, metric="tps", minute=minute, count=4, total=100.0, maximum=40.0)
    client = client_as("viewer")

    for window in ("15m", "1h", "6h"):
        body = client.get(f"/fleet/targets/{primary.pk}/series/tps.json?window={window}").json()
        assert body["series"][0]["values"] == [7.0] and body["step_s"] == 10.0, window
        assert body["unit"] == "tx/s"
    for window, span_s in (("24h", 86400), ("7d", 7 * 86400)):
        body = client.get(f"/fleet/targets/{primary.pk}/series/tps.json?window={window}").json()
        assert body["series"][0]["values"] == [25.0] and body["t"] == [minute.timestamp()], window
        assert body["step_s"] == 60.0 and body["to"] - body["from"] == pytest.approx(span_s, abs=5)
    assert client.get(f"/fleet/targets/{primary.pk}/series/tps.json?window=2y").json()["window"] == "1h"
    assert client.get(f"/fleet/targets/{primary.pk}/series/no_such_chart.json").status_code == 404


def test_it_serves_a_statements_calls_and_mean_time(db, client_as, demo_targets, settings):
    settings.MONITOR_STATEMENTS_INTERVAL_S = 60.0
    primary = demo_targets["demo-primary"]
    now = timezone.now()
    for age_min, calls, total in ((30, 10, 50.0), (29, 4, 40.0), (10, 2, 2.0)):
        end = now - timedelta(minutes=age_min)
        StatementDelta.objects.create(target=primary, queryid=-42, dbid=1, userid=1, window_start=end - timedelta(minutes=1),
                                      window_end=end, calls=calls, total_exec_ms=total, rows=calls)
    client = client_as("viewer")

    mean = client.get(f"/fleet/targets/{primary.pk}/queries/-42/series/mean_ms.json?window=1h").json()
    calls = client.get(f"/fleet/targets/{primary.pk}/queries/-42/series/calls.json?window=1h").json()

    assert mean["unit"] == "ms" and mean["series"][0]["values"] == [5.0, 10.0, None, 1.0]
    assert calls["unit"] == "calls" and calls["series"][0]["values"] == [10, 4, None, 2]
    page = client.get(f"/fleet/targets/{primary.pk}/queries/-42/?window=6h").content.decode()
    assert f'data-src="/fleet/targets/{primary.pk}/queries/-42/series/mean_ms.json"' in page
    assert 'data-window="6h"' in page


def test_it_requires_a_login_for_chart_data(db, client, users, demo_targets):
    url = f"/fleet/targets/{demo_targets['demo-primary'].pk}/series/tps.json"
    response = client.get(url)
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    client.force_login(users["viewer"])
    assert client.get(url).json()["unit"] == "tx/s"


def test_it_records_transactions_per_second_and_connections_by_state(transactional_db, demo_targets, fleet):
    primary = demo_targets["demo-primary"]
    with _connect(fleet) as idle_session:
        idle_session.execute("SELECT 1")
        samplers.sample_fast_round([primary])
        for _ in range(5):
            idle_session.execute("SELECT 1")  # autocommit: five more transactions
        samplers.sample_fast_round([primary])

    recorded = dict(MetricPoint.objects.filter(target=primary).order_by("at").values_list("metric", "value"))
    assert recorded["tps"] > 0
    assert recorded["connections_idle"] >= 1
    assert "connections_active" in recorded and "connections_idle_in_transaction" in recorded
    assert MetricPoint.objects.filter(target=primary, metric="tps").count() == 1  # none for the first sample


def test_it_serves_every_chart_without_connecting_to_the_target(transactional_db, client_as, demo_targets):
    samplers.sample_fast_round()
    samplers.sample_fast_round()
    engines.dispose_all()
    client = client_as("viewer")
    for target in demo_targets.values():
        for name in charts.TARGET_CHARTS:
            for window in ("15m", "24h"):
                response = client.get(f"/fleet/targets/{target.pk}/series/{name}.json?window={window}")
                assert response.status_code == 200 and response["Content-Type"] == "application/json"
    page = client.get(f"/fleet/targets/{demo_targets['demo-primary'].pk}/").content.decode()
    assert 'id="chart-tps"' in page and "/series/replica_lag_bytes.json" in page
    assert engines.engines_snapshot() == {}, "a chart opened a connection to a target"


def _hover_near_the_end(chart):
    """The cursor over the last minutes of a 1 h chart, where the samples are."""
    over = chart.locator(".u-over")
    over.scroll_into_view_if_needed()
    box = over.bounding_box()
    over.hover(position={"x": box["width"] * 0.97, "y": box["height"] / 2})


@pytest.mark.browser
def test_it_draws_the_target_charts_with_hover_values_and_window_choices(page, users, demo_targets, artifacts):
    primary = demo_targets["demo-primary"]
    samplers.sample_fast_round([primary])
    now = timezone.now()
    for i in range(60):  # ten minutes of samples with a silent stretch in the middle
        if 25 <= i < 35:
            continue
        series.record(primary, {"tps": 40 + (i % 7) * 3, "connections_active": 1 + i % 3, "connections_idle": 4,
                                "connections_idle_in_transaction": i % 2, "pool_checked_out": i % 4,
                                "replica_lag_s": 0.5 + (i % 5) / 10, "replica_lag_bytes": 2048 * (i % 6)},
                      at=now - timedelta(seconds=600 - i * 10))
    problems = []
    page.on("console", lambda m: problems.append(m.text)
            if m.type in ("error", "warning") and not m.location.get("url", "").endswith("/favicon.ico") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.add_init_script("document.addEventListener('securitypolicyviolation', (e) => "
                         "console.error('CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI))")
    _log_in(page, "viewer")
    page.goto(f"/fleet/targets/{primary.pk}/")

    for name in ("tps", "connections", "pool", "replica_lag_s", "replica_lag_bytes"):
        expect(page.locator(f"#chart-{name} canvas")).to_have_count(1)
    tps = page.locator("#chart-tps")
    _hover_near_the_end(tps)
    expect(tps.locator(".u-legend .u-series").nth(1).locator(".u-value")).to_have_text(re.compile(r"^\d+(\.\d+)? tx/s$"))
    expect(tps.locator(".u-legend .u-series").nth(0).locator(".u-value")).to_contain_text("UTC")
    lag = page.locator("#chart-replica_lag_bytes")
    _hover_near_the_end(lag)
    expect(lag.locator(".u-legend .u-series").nth(1).locator(".u-value")).to_have_text(re.compile(r"^\d+(\.\d+)? (B|KB)$"))
    expect(page.locator("#chart-connections .u-legend")).to_contain_text("idle in transaction")
    page.screenshot(path=str(artifacts / "charts-target-1h.png"), full_page=True)

    tps.locator("button[data-chart-window='15m']").click()
    expect(tps).to_have_attribute("data-drawn-window", "15m")
    expect(tps.locator("button[data-chart-window='15m']")).to_have_attribute("aria-pressed", "true")
    tps.locator("button[data-chart-window='7d']").click()
    expect(tps).to_have_attribute("data-drawn-window", "7d")
    # the live region is swapped every few seconds: the chart and its window survive it
    page.evaluate("document.getElementById('live').dataset.old = 'yes'; document.getElementById('chart-tps').dataset.kept = 'yes'")
    expect(page.locator("#live[data-old]")).to_have_count(0, timeout=20_000)
    expect(page.locator("#live")).to_have_count(1)
    expect(tps).to_have_attribute("data-kept", "yes")  # the same element, not redrawn from scratch
    expect(tps).to_have_attribute("data-drawn-window", "7d")
    expect(tps.locator("canvas")).to_have_count(1)
    expect(tps.locator("button[data-chart-window='7d']")).to_have_attribute("aria-pressed", "true")
    page.screenshot(path=str(artifacts / "charts-target-7d.png"), full_page=True)
    # a live chart fetches again on its own and shows what was sampled since
    tps.locator("button[data-chart-window='15m']").click()
    expect(tps).to_have_attribute("data-drawn-window", "15m")
    drawn = tps.get_attribute("data-samples")
    series.record(primary, {"tps": 77.0})
    expect(tps).not_to_have_attribute("data-samples", drawn, timeout=25_000)
    assert not [p for p in problems if "Content Security Policy" in p or "CSP" in p], problems
    assert not problems, problems


@pytest.mark.browser
def test_it_draws_a_statements_calls_and_mean_time(page, users, demo_targets, artifacts):
    primary = demo_targets["demo-primary"]
    now = timezone.now()
    for i in range(20):
        end = now - timedelta(minutes=40 - i * (1 if i < 10 else 2))
        StatementDelta.objects.create(target=primary, queryid=-7, dbid=1, userid=1, window_start=end - timedelta(minutes=1),
                                      window_end=end, calls=10 + i, total_exec_ms=(10 + i) * (2.5 + i % 3), rows=1)
    problems = []
    page.on("console", lambda m: problems.append(m.text)
            if m.type in ("error", "warning") and not m.location.get("url", "").endswith("/favicon.ico") else None)
    _log_in(page, "viewer")
    page.goto(f"/fleet/targets/{primary.pk}/queries/-7/?window=1h")

    for name in ("mean_ms", "calls"):
        chart = page.locator(f"#chart-{name}")
        expect(chart.locator("canvas")).to_have_count(1)
        expect(chart.locator("svg.spark")).to_have_count(0)  # the no-JavaScript fallback is replaced
        expect(chart).to_have_attribute("data-drawn-window", "1h")
    mean = page.locator("#chart-mean_ms")
    _hover_near_the_end(mean)
    expect(mean.locator(".u-legend .u-series").nth(1).locator(".u-value")).to_have_text(re.compile(r"^\d+(\.\d+)? ms$"))
    page.screenshot(path=str(artifacts / "charts-query-history.png"), full_page=True)
    assert not problems, problems
