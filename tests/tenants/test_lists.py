"""The Tenants and Jobs lists: sorted by their column headers, a page at a time, with the filters
kept in every header and page link; archived tenants show no stale health figures."""

import html
import re

from console.models import Job
from tenants.models import Tenant, TenantHealth
from tenants.views import TENANTS_PER_PAGE


def _measured(tenant: Tenant, size_bytes: int, drift_count: int = 0) -> Tenant:
    tenant.last_health = TenantHealth.objects.create(tenant=tenant, version="0003", head="0003", size_bytes=size_bytes,
                                                     drift=["x"] * drift_count, drift_count=drift_count)
    tenant.save()
    return tenant


def _slugs(page: str) -> list[str]:
    return re.findall(r'<tr data-tenant="([a-z0-9_]+)"', page)


def _links(page: str, element_id: str) -> list[str]:
    region = page.split(f'id="{element_id}"', 1)[1]
    return [html.unescape(href) for href in re.findall(r'href="(\?[^"]*)"', region.split("</nav>", 1)[0])]


def test_it_sorts_tenants_by_a_column_header_keeping_the_filter(client_as, demo_targets):
    primary, bouncer = demo_targets["demo-primary"], demo_targets["demo-bouncer"]
    for slug, size in (("small", 10_000), ("large", 90_000), ("middle", 50_000)):
        _measured(Tenant.objects.create(name=slug, slug=slug, target=primary, state="active"), size)
    Tenant.objects.create(name="elsewhere", slug="elsewhere", target=bouncer, state="active")
    client = client_as("viewer")

    page = client.get(f"/tenants/?target={primary.pk}").content.decode()
    assert _slugs(page) == ["large", "middle", "small"]  # by slug until told otherwise
    size_link = html.unescape(re.search(r'data-sort="size" href="([^"]+)"', page).group(1))
    assert f"target={primary.pk}" in size_link and "sort=size" in size_link

    ascending = client.get(f"/tenants/{size_link}").content.decode()
    assert _slugs(ascending) == ["small", "middle", "large"]
    assert 'aria-sort="ascending"' in ascending
    turned = html.unescape(re.search(r'data-sort="size" href="([^"]+)"', ascending).group(1))
    assert "sort=-size" in turned and f"target={primary.pk}" in turned  # the same header turns it round
    assert _slugs(client.get(f"/tenants/{turned}").content.decode()) == ["large", "middle", "small"]
    assert 'name="sort" value="size"' in ascending  # the filter form keeps the order too

    # an unknown column is the default order, not an error
    assert _slugs(client.get(f"/tenants/?target={primary.pk}&sort=password").content.decode()) == ["large", "middle", "small"]


def test_it_pages_the_tenant_list_keeping_filter_and_order(client_as, demo_targets):
    primary = demo_targets["demo-primary"]
    Tenant.objects.bulk_create([Tenant(name=f"t{n:03}", slug=f"t{n:03}", target=primary, state="active")
                                for n in range(TENANTS_PER_PAGE + 5)])
    Tenant.objects.create(name="failed", slug="zz_failed", target=primary, state="failed")
    client = client_as("viewer")

    first = client.get("/tenants/?state=active&sort=-tenant").content.decode()
    assert len(_slugs(first)) == TENANTS_PER_PAGE and _slugs(first)[0] == f"t{TENANTS_PER_PAGE + 4:03}"
    assert f"Tenants 1–{TENANTS_PER_PAGE} of {TENANTS_PER_PAGE + 5}" in first
    [next_link] = _links(first, "tenant-pager")
    assert "state=active" in next_link and "sort=-tenant" in next_link and "page=2" in next_link

    second = client.get(f"/tenants/{next_link}").content.decode()
    assert _slugs(second) == [f"t{n:03}" for n in range(4, -1, -1)]  # the rest, still newest slug first
    assert "zz_failed" not in second


def test_it_shows_no_stale_health_figures_for_an_archived_tenant(client_as, demo_targets):
    primary = demo_targets["demo-primary"]
    archived = _measured(Tenant.objects.create(name="Gone", slug="gone", target=primary, state="archived",
                                               schema_version="0002"), 77_777_777, drift_count=3)
    _measured(Tenant.objects.create(name="Here", slug="here", target=primary, state="active"), 1_000, drift_count=1)
    client = client_as("operator")

    listed = client.get("/tenants/").content.decode()
    row = listed.split('data-tenant="gone"', 1)[1].split("</tr>", 1)[0]
    assert "74.2 MB" not in row and "drift (3)" not in row and "0002" not in row and "never" not in row
    assert "Archived" in row
    assert _slugs(client.get("/tenants/?drift=yes").content.decode()) == ["here"]  # its old drift counts for nothing

    page = client.get(f"/tenants/{archived.pk}/").content.decode()
    assert 'id="tenant-archived-health"' in page and "74.2 MB" not in page
    assert 'id="tenant-size"' not in page and 'id="tenant-tables"' not in page
    assert "schema drift" not in page and "Refresh health" not in page  # no alerts or actions from the old figures


def test_it_sorts_and_pages_the_job_list_keeping_the_filter(client_as, db):
    Job.objects.bulk_create([Job(kind=kind, state=Job.State.SUCCEEDED)
                             for kind in ["tenants.onboard", "tenants.health"] * 30 + ["console.selftest"]])
    client = client_as("viewer")

    page = client.get("/jobs/?kind=tenants&sort=kind").content.decode()
    kinds = re.findall(r'<td class="mono">([a-z.]+)</td>', page)
    assert kinds == ["tenants.health"] * 30 + ["tenants.onboard"] * 20  # 50 a page, by kind
    assert "Jobs 1–50 of 60" in page
    [next_link] = _links(page, "job-pager")
    assert "kind=tenants" in next_link and "sort=kind" in next_link

    rest = client.get(f"/jobs/{next_link}").content.decode()
    assert re.findall(r'<td class="mono">([a-z.]+)</td>', rest) == ["tenants.onboard"] * 10

    newest_first = client.get("/jobs/").content.decode()
    assert 'aria-sort="descending"' in newest_first.split("Created", 1)[0].rsplit("<th", 1)[1]
    kind_link = html.unescape(re.search(r'data-sort="state" href="([^"]+)"', client.get("/jobs/?kind=tenants").content.decode()).group(1))
    assert "kind=tenants" in kind_link and "page" not in kind_link
