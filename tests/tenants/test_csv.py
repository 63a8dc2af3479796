"""Onboarding many tenants from lines or a CSV upload: what is read, and what is refused (with
its line number, as a form error, audited, nothing saved)."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from console.models import AuditEvent, Job
from tenants.models import Tenant


def _onboard(client, target, csv_bytes=None, **fields):
    data = {"target": target.pk, "strategy": "schema", **fields}
    if csv_bytes is not None:
        data["csv_file"] = SimpleUploadedFile("tenants.csv", csv_bytes, "text/csv")
    return client.post("/tenants/onboard/", data)


def _assert_refused(response, *expected):
    page = response.content.decode()
    assert response.status_code == 200, page[-2000:]
    for text in expected:
        assert text in page, page[-3000:]
    assert not Tenant.objects.exists() and not Job.objects.exists()
    refusal = AuditEvent.objects.get(action="tenant.onboard")
    assert refusal.outcome == "failed" and refusal.detail["errors"]
    return refusal


def test_it_refuses_a_nul_byte_in_a_csv_upload_with_its_line(db, demo_targets, client_as):
    response = _onboard(client_as("operator"), demo_targets["demo-primary"], b"nul_a,Fine\nnul_b,Bad\x00Name\n")
    _assert_refused(response, "line 2: a NUL byte")


def test_it_refuses_a_utf16_csv_upload(db, demo_targets, client_as):
    response = _onboard(client_as("operator"), demo_targets["demo-primary"], "wide_a,Wide\n".encode("utf-16-le"))
    _assert_refused(response, "line 1: a NUL byte", "Save it as UTF-8 CSV")


def test_it_refuses_a_2_mb_csv_field(db, demo_targets, client_as):
    csv_bytes = b"big_a,Fine\nbig_b," + b"x" * (2 * 1024 * 1024) + b"\n"
    response = _onboard(client_as("operator"), demo_targets["demo-primary"], csv_bytes)
    refusal = _assert_refused(response, "line 2: a field is longer than 200 characters")
    assert len(str(refusal.detail)) < 2000


def test_it_refuses_a_2_mb_field_typed_in(db, demo_targets, client_as):
    response = _onboard(client_as("operator"), demo_targets["demo-primary"], bulk="big_c," + "y" * (2 * 1024 * 1024))
    _assert_refused(response, "line 1: a field is longer than 200 characters")


@pytest.mark.parametrize("csv_text, expected", [
    ("slug,title\nhdr_a,A\n", "line 1: unknown header &#x27;title&#x27;"),
    ("slug,name,strategy,owner\nhdr_a,A,schema,me\n", "line 1: unknown header &#x27;owner&#x27;"),
    ("slug,name,strategy\nhdr_a,A,schema\nhdr_b,B,shared,extra\n", "line 3: 4 columns, expected at most 3"),
    ("slug,name\nhdr_a,A,shared\n", "line 2: 3 columns, expected at most 2"),
    ("hdr_a,A\nhdr_b,B,schema,\n", "line 2: 4 columns, expected at most 3"),
    ('hdr_a,A\nhdr_b,"Unterminated\nhdr_c,C\n', "line 2: a quote is opened and never closed"),
])
def test_it_refuses_an_unknown_header_an_extra_column_or_an_open_quote_with_the_line(csv_text, expected, db, demo_targets,
                                                                                    client_as):
    client, primary = client_as("operator"), demo_targets["demo-primary"]
    _assert_refused(_onboard(client, primary, csv_text.encode()), expected)

    response = _onboard(client, primary, b"Slug,Name\nhdr_a,Head A\n\n# a comment\nhdr_b,Head B\n")
    assert response.status_code == 302, response.content.decode()[-2000:]
    assert set(Tenant.objects.values_list("slug", "name")) == {("hdr_a", "Head A"), ("hdr_b", "Head B")}


def test_it_refuses_more_rows_than_configured_before_creating_any(db, demo_targets, client_as, settings):
    settings.TENANT_CSV_MAX_ROWS = 3
    rows = "".join(f"many_{i},Many {i}\n" for i in range(4))
    response = _onboard(client_as("operator"), demo_targets["demo-primary"], ("slug,name\n" + rows).encode())
    _assert_refused(response, "line 5: more than 3 tenants (TENANT_CSV_MAX_ROWS)")


def test_it_refuses_a_csv_file_larger_than_its_rows_can_be_without_reading_it(db, demo_targets, client_as, settings):
    settings.TENANT_CSV_MAX_ROWS = 2  # 2 KB at most
    csv_bytes = b"# padding\n" * 300 + b"pad_a,Padded\n"
    response = _onboard(client_as("operator"), demo_targets["demo-primary"], csv_bytes)
    _assert_refused(response, "The CSV file is larger than 2 KB: 2 tenants at most.")


def test_it_takes_5000_rows_by_default_and_says_so(db, demo_targets, client_as):
    client = client_as("operator")
    assert "5,000 tenants at most" in client.get("/tenants/onboard/").content.decode()
    rows = "".join(f"many_{i},Many {i}\n" for i in range(5001))
    response = _onboard(client, demo_targets["demo-primary"], rows.encode())
    _assert_refused(response, "line 5001: more than 5,000 tenants")


@pytest.mark.parametrize("name", ["Evil\u202eoC", "Iso\u2066late\u2069", "Esc\x1b[31mape", "Two\u2028Lines", "Tab\there"])
def test_it_refuses_names_with_control_or_bidi_characters_in_a_csv(name, db, demo_targets, client_as):
    csv_bytes = f"ctl_a,Fine\nctl_b,{name}\n".encode()
    response = _onboard(client_as("operator"), demo_targets["demo-primary"], csv_bytes)
    refusal = _assert_refused(response, "line 2: Names cannot contain control or bidirectional-text characters")
    assert all(char.isprintable() for message in refusal.detail["errors"] for char in message)


@pytest.mark.parametrize("name", ["Evil\u202eoC", "Left\u200fMark"])
def test_it_refuses_a_tenant_name_with_bidi_controls_in_the_form_and_lines(name, db, demo_targets, client_as):
    client = client_as("operator")
    primary = demo_targets["demo-primary"]
    _assert_refused(_onboard(client, primary, slug="bidi_a", name=name), "Names cannot contain control")
    AuditEvent.objects.all().delete()
    _assert_refused(_onboard(client, primary, bulk=f"bidi_b,{name}"), "line 1: Names cannot contain control")

    response = _onboard(client, primary, slug="intl_a", name="Société Générale", bulk="intl_b,株式会社")
    assert response.status_code == 302, response.content.decode()[-2000:]
    assert set(Tenant.objects.values_list("name", flat=True)) == {"Société Générale", "株式会社"}


@pytest.mark.parametrize("header", ["slug,name", "slug,name,strategy", "Slug, Name , Strategy"])
def test_it_recognises_and_skips_a_header_row(header, db, demo_targets, client_as):
    rows = f"{header}\nhdr_ok_a,Header A{',shared' if header.count(',') == 2 else ''}\nhdr_ok_b,Header B\n"
    response = _onboard(client_as("operator"), demo_targets["demo-primary"], rows.encode())
    assert response.status_code == 302, response.content.decode()[-2000:]
    assert sorted(Tenant.objects.values_list("slug", flat=True)) == ["hdr_ok_a", "hdr_ok_b"]
