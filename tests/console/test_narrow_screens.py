"""A phone-sized screen (390 × 844) and a keyboard, in a real browser: pages as wide as the
viewport, wide tables scrolling inside their card, the navigation folded behind a button and
reachable with Tab, a skip link, and a label on every form control."""

import re

import pytest
from playwright.sync_api import expect

from tests.console.test_browser import _log_in

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}
PAGES = ["/fleet/", "/tenants/", "/jobs/", "/audit/", "/approvals/", "/tenants/onboard/", "/fleet/targets/new/", "/migrations/", "/drills/"]
NAVIGATION = ["Fleet", "Tenants", "Migrations", "Drills", "Jobs", "Audit", "Approvals"]

# Form controls without a label: <label for>, a wrapping <label>, aria-label or aria-labelledby.
UNLABELLED = """() => [...document.querySelectorAll("input, select, textarea")]
    .filter((el) => el.type !== "hidden" && !el.labels.length
             && !el.getAttribute("aria-label") && !el.getAttribute("aria-labelledby"))
    .map((el) => el.outerHTML)"""


@pytest.fixture
def busy_console(transactional_db, demo_targets, users):
    """Rows on every listed page, some of them long: tenants, jobs and audit events."""
    from console import audit
    from console.models import Job
    from tenants import onboarding

    primary = demo_targets["demo-primary"]
    slugs = ["acme", "a_tenant_slug_that_is_forty_characters_x"]
    onboarding.create_tenants([onboarding.TenantSpec(slug, f"Tenant {slug}", "schema") for slug in slugs], primary)
    for kind in ("selftest", "tenants.onboard"):
        Job.objects.create(kind=kind, target=primary, params={})
    for slug in slugs:
        audit.record(None, "tenant.onboard", primary, user=users["operator"],
                     detail={"tenants": [slug], "target": primary.name, "note": "x" * 60})
    return primary


def _focused_text(page) -> str:
    return page.evaluate("document.activeElement.textContent.trim()")


def test_it_fits_every_page_into_a_phone_screen_scrolling_wide_tables_inside(page, busy_console, artifacts):
    page.set_viewport_size(PHONE)
    _log_in(page, "operator")
    for path in [*PAGES, f"/fleet/targets/{busy_console.pk}/"]:
        page.goto(path)
        expect(page.locator("main h1")).to_be_visible()
        page.screenshot(path=str(artifacts / f"narrow-{path.strip('/').replace('/', '-')}.png"), full_page=True)
        page_width, viewport = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert viewport == PHONE["width"] and page_width <= viewport, (path, page_width)

    # the audit table is wider than the screen: it scrolls inside its box, not the page
    page.goto("/audit/")
    scroll_width, client_width = page.locator("#audit").evaluate("(t) => [t.scrollWidth, t.clientWidth]")
    wrapper_scroll, wrapper_client = page.locator(".table-scroll").evaluate("(d) => [d.scrollWidth, d.clientWidth]")
    assert max(scroll_width - client_width, wrapper_scroll - wrapper_client) > 0


def test_it_folds_the_navigation_behind_a_menu_reachable_with_tab(page, busy_console, artifacts):
    page.set_viewport_size(PHONE)
    _log_in(page, "operator")
    links = page.locator("nav#mainnav a")
    expect(links).to_have_count(len(NAVIGATION))
    for link in links.all():
        expect(link).to_be_hidden()
    menu = page.get_by_role("button", name="Menu")
    expect(menu).to_have_attribute("aria-expanded", "false")

    page.keyboard.press("Tab")  # the skip link
    page.keyboard.press("Tab")  # the brand
    page.keyboard.press("Tab")
    assert _focused_text(page) == "Menu"
    page.keyboard.press("Enter")
    expect(menu).to_have_attribute("aria-expanded", "true")
    page.screenshot(path=str(artifacts / "narrow-navigation-open.png"), full_page=True)
    for name in NAVIGATION:
        page.keyboard.press("Tab")
        assert _focused_text(page).startswith(name)
        focused = page.locator("nav#mainnav a:focus")
        expect(focused).to_be_visible()
        expect(focused).to_be_in_viewport()
        # the focus ring shows: :focus-visible draws an outline
        assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"

    page.keyboard.press("Escape")
    expect(menu).to_have_attribute("aria-expanded", "false")
    expect(menu).to_be_focused()
    for link in links.all():
        expect(link).to_be_hidden()

    menu.click()
    page.locator("nav#mainnav a", has_text="Audit").click()
    expect(page.locator("main h1")).to_have_text("Audit")


def test_it_shows_the_navigation_without_javascript_too(page, busy_console, live_server):
    without_javascript = page.context.browser.new_page(java_script_enabled=False, viewport=PHONE,
                                                       base_url=live_server.url)
    _log_in(without_javascript, "operator")
    for link in without_javascript.locator("nav#mainnav a").all():
        expect(link).to_be_visible()
    expect(without_javascript.get_by_role("button", name="Menu")).to_be_hidden()
    assert without_javascript.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_it_skips_to_the_content_with_the_first_tab(page, busy_console, artifacts):
    page.set_viewport_size(PHONE)
    _log_in(page, "operator")
    page.goto("/audit/")
    skip = page.locator("a.skip-link")
    expect(skip).not_to_be_in_viewport()

    page.keyboard.press("Tab")
    expect(skip).to_be_focused()
    expect(skip).to_be_in_viewport()
    page.screenshot(path=str(artifacts / "narrow-skip-link.png"))
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/audit/#main$"))
    expect(page.locator("main#main")).to_be_focused()
    page.keyboard.press("Tab")  # the next stop is inside the content, past the navigation
    assert page.evaluate("document.querySelector('main').contains(document.activeElement)")
    assert _focused_text(page) == "Export CSV"


def test_it_labels_every_form_control(page, busy_console):
    page.goto("/accounts/login/")
    assert page.evaluate(UNLABELLED) == []
    _log_in(page, "admin")
    for path in ["/fleet/", "/fleet/targets/new/", f"/fleet/targets/{busy_console.pk}/edit/", "/tenants/",
                 "/tenants/onboard/", "/jobs/", "/audit/", "/approvals/"]:
        page.goto(path)
        expect(page.locator("main h1")).to_be_visible()
        assert page.evaluate(UNLABELLED) == [], path
