"""The web layer's defences: control characters refused in one place, request ids in logs and
error pages, styled error pages, login lockout, session lifetime, Content-Security-Policy, and
the production settings that pass `manage.py check --deploy`."""

import io
import logging
import os
import re
import secrets
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.test import Client
from django.urls import path
from playwright.sync_api import expect

from console import urls as console_urls
from console.middleware import RequestIdFilter
from console.models import AuditEvent

ROOT = Path(__file__).resolve().parents[2]


# This module is also a URLconf (settings.ROOT_URLCONF = __name__): the console's URLs plus a view
# that fails, since the console itself has no page that fails on purpose.
def _failing_view(request):
    raise RuntimeError("the failure this test asked for")


urlpatterns = [path("fail/", _failing_view), *console_urls.urlpatterns]
handler500 = console_urls.handler500


@pytest.fixture
def failing_page(settings):
    settings.ROOT_URLCONF = __name__
    return "/fail/"


@contextmanager
def console_log():
    """What the console's own log handler (settings.LOGGING) writes, while the block runs."""
    handler = next(h for h in logging.getLogger().handlers if any(isinstance(f, RequestIdFilter) for f in h.filters))
    written = io.StringIO()
    previous = handler.setStream(written)
    try:
        yield written
    finally:
        handler.setStream(previous)


def _console_process(*args: str, **env: str) -> subprocess.CompletedProcess:
    """Runs Python in a fresh process with the console's defaults and `env` (not the suite's environment)."""
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8", **env},
    )


def _with_settings(code: str, **env: str) -> subprocess.CompletedProcess:
    return _console_process("-c", f"import django; django.setup()\n{code}", DJANGO_SETTINGS_MODULE="console.settings", **env)


PRODUCTION = {"CONSOLE_PRODUCTION": "true", "CONSOLE_SECRET_KEY": secrets.token_urlsafe(48)}


# Control characters ------------------------------------------------------------------------------


def test_it_refuses_a_nul_byte_in_a_query_parameter_with_a_400_page(client_as):
    client = client_as("viewer")

    refused = client.get("/fleet/", {"tag": "abc\x00def"})
    assert refused.status_code == 400
    body = refused.content.decode()
    assert "control character" in body and "the “tag” parameter" in body
    assert 'class="mainnav"' in body  # the styled page, with the navigation

    assert client.get("/fleet/", {"tag": "tab\tand\r\nnewlines"}).status_code == 200


def test_it_refuses_control_characters_in_the_path_and_in_form_fields(client_as):
    client = client_as("admin")

    assert client.get("/fleet/targets/1%00/").status_code == 400
    assert client.post("/fleet/targets/new/", {"name": "bell\x07"}).status_code == 400
    assert client.post("/fleet/targets/new/", {"na\x1bme": "x"}).status_code == 400


def test_it_audits_an_action_refused_for_a_control_character(client_as, demo_targets):
    primary = demo_targets["demo-primary"]
    client = client_as("operator")

    response = client.post(f"/fleet/targets/{primary.pk}/explain/", {"sql": "SELECT 1\x00"})

    assert response.status_code == 400
    event = AuditEvent.objects.get(action="monitors.explain")
    assert event.outcome == "denied" and event.actor_username == "operator"
    assert event.detail["why"] == "control character in the “sql” parameter"


@pytest.mark.browser
def test_it_shows_the_refusal_of_an_htmx_request_in_the_page(page, users, demo_targets):
    primary = demo_targets["demo-primary"]
    _log_in(page, "operator")
    page.goto(f"/fleet/targets/{primary.pk}/")

    page.fill("#panel-explain textarea", "SELECT 1\x00")
    page.click("#panel-explain button[type=submit]")  # hx-post: htmx swaps no 4xx on its own

    expect(page.locator("h1")).to_have_text("Bad request")
    expect(page.locator("main")).to_contain_text("control character (such as a NUL byte) in the “sql” parameter")
    expect(page.locator("nav.mainnav")).to_be_visible()
    assert AuditEvent.objects.get(action="monitors.explain").outcome == "denied"


# Request ids, logs, error pages ---------------------------------------------------------------


def test_it_logs_a_500_with_its_traceback_under_the_request_id_the_page_shows(client_as, failing_page):
    client = client_as("viewer")
    client.raise_request_exception = False

    with console_log() as log:
        response = client.get(failing_page)

    assert response.status_code == 500
    request_id = response["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{16}", request_id)
    body = response.content.decode()
    assert f'<code id="request-id">{request_id}</code>' in body and 'class="mainnav"' in body
    logged = log.getvalue()
    assert f"ERROR django.request [{request_id}] Internal Server Error: /fail/" in logged
    assert "Traceback (most recent call last)" in logged
    assert "RuntimeError: the failure this test asked for" in logged
    assert client.get("/fleet/")["X-Request-ID"] != request_id


def test_it_answers_a_csrf_failure_with_the_styled_403_page(users):
    client = Client(enforce_csrf_checks=True)
    client.force_login(users["operator"])

    refused = client.post("/jobs/selftest/", {"steps": 2})

    assert refused.status_code == 403
    body = refused.content.decode()
    assert "security token was missing or out of date" in body and 'class="mainnav"' in body


CSP_VIOLATIONS = """
window.__csp_violations = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__csp_violations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`));
"""


def _log_in(page, role):
    page.goto("/accounts/login/")
    page.fill("#id_username", role)
    page.fill("#id_password", f"{role}-pw-123")
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Fleet")


@pytest.mark.browser
def test_it_shows_styled_403_404_and_500_pages_with_the_navigation(page, users, failing_page, artifacts):
    page.add_init_script(CSP_VIOLATIONS)
    _log_in(page, "viewer")

    for url, status, heading, shot in [
        ("/fleet/targets/new/", 403, "Not allowed", "error-403.png"),
        ("/no/such/page/", 404, "Not found", "error-404.png"),
        (failing_page, 500, "Something went wrong", "error-500.png"),
    ]:
        response = page.goto(url)
        assert response.status == status, url
        expect(page.locator("h1")).to_have_text(heading)
        expect(page.locator("nav.mainnav")).to_be_visible()
        expect(page.locator(".whoami .role")).to_have_text("viewer")
        page.screenshot(path=str(artifacts / shot), full_page=True)
        assert page.evaluate("window.__csp_violations") == [], url

    expect(page.locator("#request-id")).to_have_text(response.headers["x-request-id"])


# Content-Security-Policy ------------------------------------------------------------------------


def test_it_sends_a_content_security_policy_of_the_console_itself_only(client_as):
    policy = client_as("viewer").get("/fleet/")["Content-Security-Policy"]

    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in policy and "script-src" not in policy and "style-src" not in policy


INLINE_CODE = re.compile(
    r"<script(?![^>]*\ssrc=)[^>]*>|<style|\sstyle=|\son[a-z]+=|\shx-on|javascript:|\shx-vals=[\"']js:", re.I
)


def test_it_keeps_every_template_free_of_what_the_policy_blocks():
    found = [
        f"{template.relative_to(ROOT)}:{number}: {match.group(0)}"
        for template in sorted((ROOT / "templates").rglob("*.html"))
        for number, line in enumerate(template.read_text().splitlines(), 1)
        for match in INLINE_CODE.finditer(line)
    ]
    assert not found, "move it to static/console.js or static/console.css:\n" + "\n".join(found)


@pytest.mark.browser
def test_it_keeps_the_pages_working_under_the_content_security_policy(page, users, demo_targets, live_worker, artifacts):
    from monitors import samplers

    samplers.sample_fast_round()
    page.add_init_script(CSP_VIOLATIONS)
    _log_in(page, "admin")

    meter = page.locator("#overview .meter .fill").first  # width from data-width, set by console.js
    expect(meter).to_have_attribute("data-width", re.compile(r"^[0-9]+$"))
    assert page.evaluate("(el) => el.style.width", meter.element_handle()) == meter.get_attribute("data-width") + "%"

    page.click("text=demo-scratch")
    expect(page.locator("h1")).to_contain_text("demo-scratch")
    asked = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    page.click("button:has-text('Remove')")  # data-confirm, asked by console.js: dismissed
    assert asked == ["Remove demo-scratch from the fleet? This does not touch the server."]
    expect(page.locator("h1")).to_contain_text("demo-scratch")

    page.goto("/jobs/")
    page.click("text=Run worker self-test")
    expect(page.locator("#job-state")).to_have_text("Succeeded", timeout=40_000)
    expect(page.locator(".progress .bar")).to_have_attribute("data-width", "100")
    assert page.evaluate("document.querySelector('.progress .bar').style.width") == "100%"
    page.goto("/tenants/")
    page.screenshot(path=str(artifacts / "csp-tenants.png"), full_page=True)
    assert page.evaluate("window.__csp_violations") == []


# Login and sessions ----------------------------------------------------------------------------


def _log_in_from(address, username, password):
    return Client(REMOTE_ADDR=address).post("/accounts/login/", {"username": username, "password": password})


def test_it_locks_out_a_user_from_one_address_after_repeated_failures_and_audits_it(users, settings):
    assert settings.AXES_FAILURE_LIMIT == 5
    for _ in range(4):
        assert _log_in_from("10.0.0.1", "operator", "wrong").status_code == 200

    locked = _log_in_from("10.0.0.1", "operator", "wrong")
    assert locked.status_code == 429
    assert "Too many failed logins for operator from your address" in locked.content.decode()
    refused = _log_in_from("10.0.0.1", "operator", "operator-pw-123")  # the right password, too late
    assert refused.status_code == 429 and 'id="locked-out"' in refused.content.decode()

    assert _log_in_from("10.0.0.2", "operator", "operator-pw-123").status_code == 302  # another address
    assert _log_in_from("10.0.0.1", "viewer", "viewer-pw-123").status_code == 302  # another user
    events = AuditEvent.objects.filter(action="login.locked_out").order_by("pk")
    assert [(e.outcome, e.remote_addr, e.detail["username"]) for e in events] == [("denied", "10.0.0.1", "operator")] * 2


def test_it_keeps_a_session_eight_hours_unless_configured_otherwise(users):
    logged_in = _log_in_from("127.0.0.1", "viewer", "viewer-pw-123")

    assert logged_in.status_code == 302
    assert logged_in.cookies["sessionid"]["max-age"] == 8 * 3600
    configured = _with_settings("from django.conf import settings; print(settings.SESSION_COOKIE_AGE)", CONSOLE_SESSION_AGE_H="0.5")
    assert configured.stdout.strip() == "1800", configured.stderr


# Production settings ---------------------------------------------------------------------------


def test_it_passes_check_deploy_under_production_settings():
    result = _console_process("manage.py", "check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_it_refuses_production_settings_with_a_default_or_short_secret_key():
    for key in (None, "demo-insecure-secret-key-CHANGE-ME", "short"):
        env = {**PRODUCTION, "CONSOLE_SECRET_KEY": key} if key else {"CONSOLE_PRODUCTION": "true"}
        result = _console_process("manage.py", "check", **env)
        assert result.returncode != 0
        assert "ImproperlyConfigured: CONSOLE_PRODUCTION needs a CONSOLE_SECRET_KEY" in result.stderr


def test_it_sends_secure_cookies_and_hsts_under_production_settings():
    probe = """
from django.test import Client
client = Client(HTTP_HOST="localhost")
login = client.get("/accounts/login/", secure=True)
print(login.status_code, login.cookies["csrftoken"]["secure"], login.headers["Strict-Transport-Security"])
print(client.get("/fleet/").status_code, client.get("/fleet/")["Location"], client.get("/healthz").status_code)
from django.conf import settings
print(settings.SESSION_COOKIE_SECURE)
"""
    result = _with_settings(probe, **PRODUCTION)

    assert result.stdout.splitlines() == [
        "200 True max-age=31536000; includeSubDomains; preload",
        "301 https://localhost/fleet/ 200",  # plain HTTP is redirected, except the probes
        "True",
    ], result.stderr
