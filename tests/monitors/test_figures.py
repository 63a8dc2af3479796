"""The figures and their levels, computed one way for pages, alerts and series (pure logic)."""

import pytest

from monitors import figures


def test_it_computes_pool_use_against_size_plus_overflow():
    assert figures.pool_utilisation_pct({"size": 5, "max_overflow": 5, "checked_out": 7}) == 70.0
    assert figures.pool_utilisation_pct({"size": 0, "max_overflow": 0, "checked_out": 0}) is None
    assert figures.pool_utilisation_pct(None) is None
    assert figures.overflow_pct({"overflow": 1, "max_overflow": 4}) == 25.0
    assert figures.overflow_pct({"overflow": 0, "max_overflow": 0}) is None


def test_it_counts_connections_against_what_superusers_do_not_reserve():
    assert figures.usable_connections(100, 3) == 97
    assert figures.connections_pct(97, 100, 3) == 100.0
    assert figures.connections_pct(None, 100, 3) is None
    assert figures.connections_pct(5, None, None) is None


@pytest.mark.parametrize("metric, value, expected", [
    ("pool_utilisation_pct", 69.9, None), ("pool_utilisation_pct", 70, "warning"), ("pool_utilisation_pct", 90, "critical"),
    ("connections_pct", 75, None), ("connections_pct", 80, "warning"), ("connections_pct", 95, "critical"),
    ("replica_lag_s", None, None),
])
def test_it_levels_a_figure_at_its_alert_thresholds(metric, value, expected):
    assert figures.level(metric, value) == expected


def test_it_colours_a_meter_as_its_alert_would_with_a_targets_own_thresholds():
    own = {"connections_pct": (50.0, 60.0)}
    assert figures.meter_class("connections_pct", 55, own) == "meter-warning"
    assert figures.meter_class("connections_pct", 55) == ""
    assert figures.meter_class("connections_pct", 99) == "meter-critical"
