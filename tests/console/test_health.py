"""Liveness, readiness and Prometheus metrics."""

from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from console.models import Job, Target


def _families(body: str) -> dict:
    return {family.name: family for family in text_string_to_metric_families(body)}


def test_it_reports_alive(db):
    response = Client().get("/healthz")
    assert response.status_code == 200 and response.content == b"ok\n"


def test_it_is_ready_when_the_console_db_and_redis_answer(db):
    response = Client().get("/readyz")
    assert response.status_code == 200 and response.json() == {"ready": True, "problems": []}


def test_it_names_redis_when_redis_is_down(db, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = Client().get("/readyz")
    assert response.status_code == 503
    problems = response.json()["problems"]
    assert len(problems) == 1 and problems[0].startswith("redis unreachable")


def test_it_names_the_console_db_when_it_is_down(transactional_db, settings):
    from django.db import connection

    connection.close()
    original_port = connection.settings_dict["PORT"]
    connection.settings_dict["PORT"] = "1"
    try:
        response = Client().get("/readyz")
    finally:
        connection.close()
        connection.settings_dict["PORT"] = original_port
    assert response.status_code == 503
    assert response.json()["problems"][0].startswith("console database unreachable")


def test_it_exports_targets_and_jobs_in_prometheus_format(db, demo_targets):
    Target.objects.filter(name="demo-primary").update(status=Target.Status.UP, last_latency_ms=1.5)
    Target.objects.filter(name="demo-replica").update(status=Target.Status.DOWN)
    Job.objects.create(kind="console.selftest", state=Job.State.RUNNING)
    Job.objects.create(kind="console.selftest", state=Job.State.FAILED)
    Job.objects.create(kind="console.selftest", state=Job.State.FAILED)
    response = Client().get("/metrics")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    families = _families(response.content.decode())
    up = {s.labels["target"]: s.value for s in families["fleet_target_up"].samples}
    assert up == {"demo-primary": 1, "demo-replica": 0, "demo-bouncer": 0, "demo-scratch": 0}
    latency = {s.labels["target"]: s.value for s in families["fleet_target_probe_latency_seconds"].samples}
    assert latency == {"demo-primary": 0.0015}
    jobs = {(s.labels["kind"], s.labels["state"]): s.value for s in families["fleet_jobs"].samples}
    assert jobs[("console.selftest", "failed")] == 2
    assert jobs[("console.selftest", "running")] == 1
    assert jobs[("console.selftest", "succeeded")] == 0
