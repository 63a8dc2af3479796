"""Bounded numbers: alert thresholds and the worker self-test refuse what is out of bounds, say
why, save nothing, and the threshold page shows the bounds next to the inputs."""

import pytest

from console.models import AuditEvent, Job
from monitors import alerts
from monitors.models import AlertThreshold


def _save_thresholds(client, target, **data):
    return client.post(f"/fleet/targets/{target.pk}/alerts/save/", data, follow=True)


@pytest.mark.parametrize("metric, warning, critical, expected", [
    ("connections_pct", 90, 101, "At most 100 for this alert"),
    ("pool_utilisation_pct", 150, 200, "At most 100 for this alert"),
    ("replica_lag_bytes", 1e9, 1e308, "At most 10,000,000,000,000 for this alert"),
    ("long_running_query_s", 60, 1e308, "At most 604,800 for this alert"),
    ("replica_lag_s", 30, 30, "The warning threshold must be below the critical one"),
])
def test_it_refuses_thresholds_out_of_bounds_or_not_in_order(metric, warning, critical, expected, db, client_as,
                                                             demo_targets):
    primary = demo_targets["demo-primary"]
    before = alerts.thresholds(primary)[metric]
    response = _save_thresholds(client_as("admin"), primary, metric=metric, warning=warning, critical=critical)
    assert expected in response.content.decode()
    assert not AlertThreshold.objects.exists() and alerts.thresholds(primary)[metric] == before


def test_it_shows_the_bounds_of_each_threshold_in_the_form_and_takes_them(db, client_as, demo_targets):
    primary, client = demo_targets["demo-primary"], client_as("admin")
    page = client.get(f"/fleet/targets/{primary.pk}/alerts/").content.decode()
    assert 'name="critical" type="number" min="0" max="100"' in page
    assert "0 to 100%, warning below critical" in page
    assert "0 to 10,000,000,000,000 bytes" in page

    response = _save_thresholds(client, primary, metric="connections_pct", warning=0, critical=100)
    assert "saved" in response.content.decode()
    assert alerts.thresholds(primary)["connections_pct"] == (0, 100)


@pytest.mark.parametrize("steps, expected", [
    ("0", "greater than or equal to 1"),
    ("1001", "less than or equal to 1000"),
    ("2147483648", "less than or equal to 1000"),
    ("-5", "greater than or equal to 1"),
    ("ten", "Enter a whole number"),
    ("1e3", "Enter a whole number"),
])
def test_it_refuses_self_test_steps_out_of_bounds_and_audits_it(steps, expected, db, client_as):
    response = client_as("operator").post("/jobs/selftest/", {"steps": steps}, follow=True)
    assert response.redirect_chain == [("/jobs/", 302)]
    page = response.content.decode()
    assert "Self-test steps: " in page and expected in page
    assert not Job.objects.exists()
    assert AuditEvent.objects.get(action="job.selftest").outcome == "failed"
