"""Isolation, proven on the real fleet: row-level security for shared tenants (a forgotten filter
still sees one tenant only; no tenant set sees nothing), tenant binding per transaction that
survives PgBouncer's transaction pooling, and hostile slugs refused before any SQL."""

import threading

import pytest
import sqlalchemy
from django.core.exceptions import ValidationError
from sqlalchemy import text

from console import engines, jobs
from console.models import Job
from console.pg import tenancy
from tenants import onboarding, runners
from tenants.forms import OnboardForm
from tenants.models import Tenant, validate_tenant_slug
from tests.tenants.helpers import onboard, unique_slug

APP_ROLE = "fleet_app"


def _add_documents(target, tenant, titles):
    with engines.connect(target, credential="change") as conn:
        tenancy.bind(conn, schema=tenant.schema_name, tenant_key=tenant.slug, role=APP_ROLE)
        user_id = conn.execute(text("INSERT INTO users (email, full_name) VALUES (:e, 'Owner') RETURNING id"),
                               {"e": f"owner@{tenant.slug}.example"}).scalar_one()
        folder_id = conn.execute(text("SELECT id FROM folders WHERE parent_id IS NULL")).scalar_one()
        for title in titles:
            conn.execute(text("INSERT INTO documents (folder_id, owner_id, title) VALUES (:f, :o, :t)"),
                         {"f": folder_id, "o": user_id, "t": title})


@pytest.fixture
def shared_pair(transactional_db, demo_targets):
    primary = demo_targets["demo-primary"]
    a, b = onboard(primary, (unique_slug("rla"), "RLS A", "shared"), (unique_slug("rlb"), "RLS B", "shared"))
    _add_documents(primary, a, ["a-plan", "a-budget"])
    _add_documents(primary, b, ["b-secret"])
    return primary, a, b


def test_it_shows_a_tenant_only_its_rows_even_when_the_query_forgets_the_filter(shared_pair):
    primary, a, b = shared_pair
    with engines.connect(primary, credential="change", rollback=True) as conn:
        tenancy.bind(conn, schema=a.schema_name, tenant_key=a.slug, role=APP_ROLE)
        titles = set(conn.execute(text("SELECT title FROM documents")).scalars())  # no WHERE tenant_id
        tenants_seen = set(conn.execute(text("SELECT tenant_id FROM documents UNION SELECT tenant_id FROM folders"
                                             " UNION SELECT tenant_id FROM users UNION SELECT tenant_id FROM tenants")).scalars())
        by_id = conn.execute(text("SELECT count(*) FROM documents WHERE title = 'b-secret'")).scalar_one()
    assert {"a-plan", "a-budget"} <= titles and "b-secret" not in titles
    assert tenants_seen == {a.slug}
    assert by_id == 0


def test_it_shows_no_rows_to_a_session_with_no_tenant_set(shared_pair):
    primary, _a, _b = shared_pair
    with engines.connect(primary, credential="change", rollback=True) as conn:
        tenancy.bind(conn, schema=settings_shared_schema(), tenant_key=None, role=APP_ROLE)
        counts = [conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                  for table in ("tenants", "users", "folders", "documents", "document_versions")]
    assert counts == [0, 0, 0, 0, 0]
    with engines.connect(primary, credential="change", rollback=True) as conn:  # never set in this session at all
        conn.execute(text(f"SET LOCAL ROLE {APP_ROLE}"))
        conn.execute(text(f"SET LOCAL search_path TO {settings_shared_schema()}"))
        assert conn.execute(text("SELECT count(*) FROM documents")).scalar_one() == 0


def test_it_refuses_writing_rows_into_another_tenant(shared_pair):
    primary, a, b = shared_pair
    with pytest.raises(sqlalchemy.exc.ProgrammingError, match="row-level security"):
        with engines.connect(primary, credential="change") as conn:
            tenancy.bind(conn, schema=a.schema_name, tenant_key=a.slug, role=APP_ROLE)
            conn.execute(text("INSERT INTO folders (tenant_id, name) VALUES (:other, 'planted')"), {"other": b.slug})
    with engines.connect(primary, credential="change") as conn:  # updates cannot reach B's rows either
        tenancy.bind(conn, schema=a.schema_name, tenant_key=a.slug, role=APP_ROLE)
        assert conn.execute(text("UPDATE documents SET title = 'pwned' WHERE title = 'b-secret'")).rowcount == 0


def settings_shared_schema():
    from django.conf import settings

    return settings.TENANT_SHARED_SCHEMA


def test_it_binds_tenants_per_transaction_through_pgbouncer(transactional_db, demo_targets):
    """The demo PgBouncer pools transactions over 5 server connections: 6 threads, 240 transactions,
    each bound to one of four tenants (two schema, two shared). Every transaction sees its own
    tenant only, and an unbound transaction right after sees none: nothing leaks between clients."""
    primary, bouncer = demo_targets["demo-primary"], demo_targets["demo-bouncer"]
    tenants = onboard(primary, (unique_slug("pba"), "PgB A"), (unique_slug("pbb"), "PgB B"),
                       (unique_slug("pbc"), "PgB C", "shared"), (unique_slug("pbd"), "PgB D", "shared"))
    assert bouncer.behind_pgbouncer
    wrong, leaks, backends = [], [], set()
    lock = threading.Lock()

    def client(n):
        for i in range(40):
            tenant = tenants[(n + i) % len(tenants)]
            role = APP_ROLE if tenant.strategy == "shared" else None
            with engines.connect(bouncer, credential="change", rollback=True) as conn:
                tenancy.bind(conn, schema=tenant.schema_name, tenant_key=tenant.slug, role=role)
                binding = tenancy.current_binding(conn)
                seen = set(conn.execute(text("SELECT tenant_id FROM folders")).scalars())
                pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
            with engines.connect(bouncer, credential="change", rollback=True) as conn:
                after = tenancy.current_binding(conn)
            with lock:
                backends.add(pid)
                if binding["schema"] != tenant.schema_name or binding["tenant_key"] != tenant.slug or seen != {tenant.slug}:
                    wrong.append((tenant.slug, binding, seen))
                if after["tenant_key"] is not None or after["schema"] in {t.schema_name for t in tenants}:
                    leaks.append(after)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    engines.forget(bouncer.pk)
    assert not wrong and not leaks
    assert 1 < len(backends) <= 5  # the transactions really were spread over pooled server connections


HOSTILE = [
    "acme'; DROP SCHEMA public CASCADE; --", 'acme"', "acme;", "ACME", "acmé", "аcme", "tenant-1", "1acme",
    "a" * 41, "a" * 64, "pg_catalog", "public", "information_schema", "pg_toast", "pg_anything", "", " acme",
    "acme\n", "acme\x00",
]


@pytest.mark.parametrize("slug", HOSTILE)
def test_it_refuses_hostile_slugs_before_any_sql(slug, db, demo_targets):
    with pytest.raises(ValidationError):
        validate_tenant_slug(slug)
    with pytest.raises(ValidationError):
        onboarding.create_tenants([onboarding.TenantSpec(slug, "Hostile")], demo_targets["demo-primary"])
    form = OnboardForm({"target": demo_targets["demo-primary"].pk, "strategy": "schema", "slug": slug})
    assert form.is_valid() == (slug.strip() == "acme")  # the form trims surrounding blanks, nothing more
    assert not Tenant.objects.exists()


def test_it_refuses_a_hostile_slug_in_the_job_before_connecting(transactional_db, demo_targets):
    """Even a row that bypassed validation stops at the validate step: the target here is
    unreachable, so reaching any SQL would have failed with a connection error instead."""
    from console.models import Target

    nowhere = Target.objects.create(name="nowhere", host="127.0.0.1", port=1, dbname="x", username="x",
                                    password_env="FLEET_PG_PASSWORD")
    tenant = Tenant.objects.create(name="ok", slug="placeholder", target=nowhere)
    Tenant.objects.filter(pk=tenant.pk).update(slug='x"; DROP SCHEMA public; --')
    job = Job.objects.create(kind=runners.ONBOARD, params={"tenant_ids": [tenant.pk]})
    jobs.execute(job.pk)
    tenant.refresh_from_db()
    assert tenant.state == Tenant.State.FAILED and tenant.failed_step == "validate"
    assert "lowercase letters" in tenant.error and "connect" not in tenant.error.lower()
