"""The fleet registry: pages, form validation, connection tests, commands, secrets."""

import html
import io
import os

import pytest
from django.core.management import CommandError, call_command

from console.models import AuditEvent, Target

PASSWORD_ENV = "FLEET_PG_PASSWORD"


def _form(fleet, **overrides):
    data = {
        "name": "extra-primary", "role": "primary", "upstream": "", "host": "127.0.0.1",
        "port": fleet.port("primary"), "dbname": "demo", "username": "postgres", "password": "",
        "password_env": PASSWORD_ENV, "pool_size": 5, "max_overflow": 2, "pool_timeout_s": 5,
        "pool_recycle_s": 300, "connect_timeout_s": 2, "tags_text": "prod, eu-west",
    }
    data.update(overrides)
    return data


def test_it_lists_the_fleet_with_status_and_roles(client_as, demo_targets):
    response = client_as("viewer").get("/fleet/")
    body = response.content.decode()
    assert response.status_code == 200
    for name in demo_targets:
        assert name in body
    assert "of demo-primary" in body  # replica and bouncer show their upstream


def test_it_filters_the_fleet_by_tag(client_as, demo_targets):
    scratch = demo_targets["demo-scratch"]
    scratch.tags = ["drills"]
    scratch.save()
    body = client_as("viewer").get("/fleet/?tag=drills").content.decode()
    assert "demo-scratch" in body and "demo-primary" not in body


def test_it_adds_a_target_after_a_successful_connection_test(client_as, fleet):
    response = client_as("admin").post("/fleet/targets/new/", _form(fleet))
    target = Target.objects.get(name="extra-primary")
    assert response.status_code == 302 and response["Location"] == f"/fleet/targets/{target.pk}/"
    assert target.status == Target.Status.UP and target.server_version.startswith("15")
    assert target.tags == ["prod", "eu-west"]
    event = AuditEvent.objects.get(action="target.create")
    assert event.actor_username == "admin" and event.outcome == "ok" and event.object_id == str(target.pk)


def test_it_stores_a_typed_password_encrypted_and_never_renders_it(client_as, fleet):
    secret = fleet.superuser_password
    client = client_as("admin")
    response = client.post("/fleet/targets/new/", _form(fleet, password=secret, password_env=""))
    assert response.status_code == 302
    target = Target.objects.get(name="extra-primary")
    assert target.password_encrypted and secret not in target.password_encrypted
    assert target.password() == secret
    for url in ("/fleet/", f"/fleet/targets/{target.pk}/", f"/fleet/targets/{target.pk}/edit/", "/audit/", "/metrics"):
        assert secret not in client.get(url).content.decode(), url
    assert all(secret not in str(e.detail) for e in AuditEvent.objects.all())
    # Editing without typing the password keeps the stored one.
    response = client.post(f"/fleet/targets/{target.pk}/edit/", _form(fleet, password="", password_env="", pool_size=3))
    target.refresh_from_db()
    assert response.status_code == 302 and target.pool_size == 3 and target.password() == secret


@pytest.mark.parametrize(
    "overrides, field, message",
    [
        ({"name": "x'; DROP TABLE console_target; --"}, "name", "lowercase letters"),
        ({"name": "Ünïcode"}, "name", "lowercase letters"),
        ({"host": "db host;rm -rf /"}, "host", "hostname or an IP"),
        ({"dbname": 'demo"; DROP DATABASE demo; --'}, "dbname", "ASCII letters"),
        ({"username": "a" * 64}, "username", "Ensure this value has at most 63"),
        ({"port": 70000}, "port", "between 1 and 65535"),
        ({"port": 0}, "port", "between 1 and 65535"),
        ({"password_env": "lower-case"}, "password_env", "environment variable"),
        ({"tags_text": "ok, <script>"}, "tags_text", "Tags are short"),
        ({"role": "replica"}, "upstream", "needs the primary"),
    ],
)
def test_it_refuses_bad_input_and_saves_nothing(client_as, fleet, overrides, field, message):
    response = client_as("admin").post("/fleet/targets/new/", _form(fleet, **overrides))
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert field in errors and message in " ".join(errors[field])
    assert not Target.objects.exists()


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"password": "wrong-password", "password_env": ""}, "password authentication failed"),
        ({"port": 1}, "refused"),
        ({"dbname": "no_such_db"}, 'database "no_such_db" does not exist'),
        ({"password_env": "FLEET_UNSET_VARIABLE"}, "FLEET_UNSET_VARIABLE is not set"),
    ],
)
def test_it_shows_the_exact_connection_error_and_saves_nothing(client_as, fleet, overrides, expected):
    response = client_as("admin").post("/fleet/targets/new/", _form(fleet, **overrides))
    body = html.unescape(response.content.decode())
    assert response.status_code == 200
    assert "Connection test failed" in body and expected in body
    assert fleet.superuser_password not in body
    assert not Target.objects.exists()
    assert AuditEvent.objects.get(action="target.create").outcome == "failed"


def test_it_saves_an_unreachable_target_only_when_asked(client_as, fleet):
    client_as("admin").post("/fleet/targets/new/", _form(fleet, port=1, save_unreachable="on"))
    target = Target.objects.get(name="extra-primary")
    assert target.status == Target.Status.DOWN and "refused" in target.last_error.lower()


def test_it_tests_a_connection_and_shows_server_and_recovery(client_as, demo_targets):
    replica = demo_targets["demo-replica"]
    response = client_as("operator").post(f"/fleet/targets/{replica.pk}/test/", HTTP_HX_REQUEST="true")
    body = response.content.decode()
    assert response.status_code == 200
    assert 'id="probe-result"' in body and "<html" not in body  # only the fragment
    assert "Connected: PostgreSQL 15" in body and "in recovery" in body and " ms" in body
    replica.refresh_from_db()
    assert replica.status == Target.Status.UP and replica.in_recovery is True


def test_it_shows_a_failed_connection_test_with_the_error(client_as, demo_targets, fleet):
    primary = demo_targets["demo-primary"]
    Target.objects.filter(pk=primary.pk).update(port=1)
    body = client_as("operator").post(f"/fleet/targets/{primary.pk}/test/").content.decode()
    assert "Connection failed: demo-primary:" in body and "refused" in body.lower()
    assert Target.objects.get(pk=primary.pk).status == Target.Status.DOWN


def test_it_removes_a_target_but_not_one_still_in_use(client_as, demo_targets):
    client = client_as("admin")
    primary, scratch = demo_targets["demo-primary"], demo_targets["demo-scratch"]
    response = client.post(f"/fleet/targets/{primary.pk}/delete/", follow=True)
    assert Target.objects.filter(pk=primary.pk).exists()
    assert "still used by" in response.content.decode()
    client.post(f"/fleet/targets/{scratch.pk}/delete/")
    assert not Target.objects.filter(pk=scratch.pk).exists()
    assert AuditEvent.objects.filter(action="target.delete", outcome="ok").count() == 1


def test_it_manages_targets_from_the_command_line(db, fleet, demo_targets):
    out = io.StringIO()
    call_command("target_add", "cli-replica", role="replica", upstream="demo-primary", port=fleet.port("replica"),
                 dbname="demo", password_env="FLEET_MONITOR_PASSWORD", tags="cli", stdout=out)
    assert "added cli-replica" in out.getvalue() and "up, PostgreSQL 15" in out.getvalue()
    out = io.StringIO()
    call_command("target_list", stdout=out)
    listing = out.getvalue()
    assert "cli-replica" in listing and "demo-primary" in listing
    assert os.environ[PASSWORD_ENV] not in listing
    with pytest.raises(CommandError, match="password authentication failed"):
        call_command("target_add", "cli-bad", port=fleet.port("primary"), password_env="FLEET_WRONG_PW_FOR_TEST")
    with pytest.raises(CommandError, match="name: Use 1-63 characters"):
        call_command("target_add", "Bad;Name", port=fleet.port("primary"), password_env=PASSWORD_ENV)
    assert not Target.objects.filter(name__in=["cli-bad", "Bad;Name"]).exists()
    call_command("target_remove", "cli-replica", stdout=io.StringIO())
    assert not Target.objects.filter(name="cli-replica").exists()


@pytest.fixture(autouse=True)
def wrong_password_env(monkeypatch):
    monkeypatch.setenv("FLEET_WRONG_PW_FOR_TEST", "definitely-not-it")


@pytest.mark.parametrize("field, value, message", [
    ("connect_timeout_s", "0", "greater than or equal to 1"),  # 0 would make libpq wait forever
    ("connect_timeout_s", "-3", "greater than or equal to"),
    ("pool_timeout_s", "1e308", "less than or equal to 300"),
    ("pool_timeout_s", "0", "greater than or equal to 0.1"),
    ("pool_size", "0", "greater than or equal to 1"),
    ("max_overflow", "1000", "less than or equal to 100"),
    ("pool_recycle_s", "1", "greater than or equal to 10"),
])
def test_it_refuses_pool_and_timeout_settings_out_of_bounds(db, client_as, demo_targets, fleet, field, value, message):
    response = client_as("admin").post("/fleet/targets/new/", _form(fleet, **{field: value}))
    assert response.status_code == 200 and message in response.content.decode()
    assert not Target.objects.filter(name="extra-primary").exists()


def test_it_shows_the_bounds_of_every_number_in_the_target_form(db, client_as):
    body = client_as("admin").get("/fleet/targets/new/").content.decode()
    assert 'name="connect_timeout_s"' in body and 'min="1"' in body and 'max="60"' in body
    assert "Between 1 and 60." in body and "Between 0.1 and 300." in body and "Between 1 and 100." in body
