"""The local fleet that `make up` and this suite start, and the demo bootstrap."""

import io

from django.contrib.auth.models import User
from django.core.management import call_command

from console import roles
from console.models import Target
from tests.servers import superuser





def _connect(fleet, name, dbname="postgres"):
    return superuser(fleet, name, dbname)

def test_it_streams_the_primary_to_a_replica_made_with_pg_basebackup(fleet):
    with _connect(fleet, "primary") as primary:
        row = primary.execute("SELECT application_name, state FROM pg_stat_replication").fetchone()
        assert row == ("demo-replica", "streaming")
    with _connect(fleet, "replica", "demo") as replica:
        assert replica.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True
        assert replica.execute("SELECT count(*) FROM pgbench_branches").fetchone()[0] >= 1
    assert (fleet.path("pg", "replica", "standby.signal")).exists()  # written by -R


def test_it_preloads_pg_stat_statements_everywhere(fleet):
    for name in ("primary", "replica", "scratch"):
        with _connect(fleet, name) as conn:
            assert "pg_stat_statements" in conn.execute("SHOW shared_preload_libraries").fetchone()[0]


def test_it_runs_pgbouncer_in_transaction_mode_in_front_of_the_primary(fleet):
    with _connect(fleet, "bouncer", "pgbouncer") as admin:
        admin.prepare_threshold = None
        cursor = admin.cursor()
        cursor.execute("SHOW CONFIG")
        columns = [c.name for c in cursor.description]
        config = {row[columns.index("key")]: row[columns.index("value")] for row in cursor.fetchall()}
        assert config["pool_mode"] == "transaction"
        assert config["listen_addr"] == "127.0.0.1"
    with _connect(fleet, "bouncer", "demo") as through:
        assert through.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False


def test_it_listens_on_loopback_only(fleet):
    with _connect(fleet, "primary") as conn:
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"


def test_it_bootstraps_roles_users_and_the_demo_fleet_idempotently(db, fleet, monkeypatch):
    monkeypatch.setenv("DEMO_PASSWORD", "demo-pass-for-test")
    for _ in range(2):  # running it twice is harmless
        out = io.StringIO()
        call_command("bootstrap_demo", stdout=out)
    assert sorted(Target.objects.values_list("name", flat=True)) == [
        "demo-bouncer", "demo-primary", "demo-replica", "demo-scratch"]
    assert out.getvalue().count("up, PostgreSQL 15") == 4
    assert Target.objects.get(name="demo-replica").in_recovery is True
    assert Target.objects.get(name="demo-bouncer").upstream.name == "demo-primary"
    for role in roles.ROLES:
        user = User.objects.get(username=role)
        assert user.check_password("demo-pass-for-test") and roles.primary_role(user) == role
    assert fleet.superuser_password not in out.getvalue()
    assert "password set to the current DEMO_PASSWORD" in out.getvalue()
    # Demo targets log in with the least-privilege roles, never the superuser.
    primary = Target.objects.get(name="demo-primary")
    assert (primary.username, primary.change_username, primary.monitor_is_superuser) == ("fleet_monitor", "fleet_owner", False)
    from console.models import Job
    from tenants.models import Tenant

    demo = Tenant.objects.order_by("slug")
    assert [(t.slug, t.strategy, t.state) for t in demo] == [
        ("acme", "schema", "pending"), ("globex", "schema", "pending"), ("hooli", "shared", "pending"),
        ("initech", "database", "pending"), ("umbrella", "shared", "pending")]
    assert Job.objects.get(kind="tenants.onboard").params["tenant_ids"] == sorted(t.pk for t in demo)


def test_it_sets_the_demo_users_password_to_the_current_one_on_every_run(db, fleet, monkeypatch):
    monkeypatch.setenv("DEMO_PASSWORD", "first-demo-password")
    call_command("bootstrap_demo", "--no-fleet", stdout=io.StringIO())
    monkeypatch.setenv("DEMO_PASSWORD", "second-demo-password")
    call_command("bootstrap_demo", "--no-fleet", stdout=io.StringIO())
    for role in roles.ROLES:
        user = User.objects.get(username=role)
        assert user.check_password("second-demo-password") and not user.check_password("first-demo-password")
