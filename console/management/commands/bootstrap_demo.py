"""Roles, demo users and the demo fleet, for `make up`. Safe to run again."""

import os

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand

from console import roles, services
from console.models import Target

DEMO_USERS = (roles.ADMIN, roles.OPERATOR, roles.APPROVER, roles.VIEWER)


def demo_targets(env) -> list[dict]:
    """The demo fleet's targets. Ports come from FLEET_<NAME>_PORT; hosts from FLEET_<NAME>_HOST,
    127.0.0.1 when unset or empty (`make up`), a service name under docker compose."""

    def host(name: str) -> str:
        return env.get(f"FLEET_{name}_HOST") or "127.0.0.1"

    common = {
        "username": "fleet_monitor", "password_env": "FLEET_MONITOR_PASSWORD",
        "change_username": "fleet_owner", "change_password_env": "FLEET_OWNER_PASSWORD", "tags": ["demo"],
    }
    specs = [
        {"name": "demo-primary", "role": Target.Role.PRIMARY, "host": host("PRIMARY"),
         "port": env["FLEET_PRIMARY_PORT"], "dbname": "demo", "heartbeat_enabled": True},
        {"name": "demo-replica", "role": Target.Role.REPLICA, "host": host("REPLICA"),
         "port": env["FLEET_REPLICA_PORT"], "dbname": "demo", "upstream": "demo-primary"},
        {"name": "demo-bouncer", "role": Target.Role.PGBOUNCER, "host": host("BOUNCER"),
         "port": env["FLEET_BOUNCER_PORT"], "dbname": "demo", "upstream": "demo-primary"},
        {"name": "demo-scratch", "role": Target.Role.SCRATCH, "host": host("SCRATCH"),
         "port": env["FLEET_SCRATCH_PORT"], "dbname": "postgres"},
    ]
    return [{**common, **spec, "port": int(spec["port"])} for spec in specs]


class Command(BaseCommand):
    help = "Create the role groups, the demo users and register the local demo fleet."

    def add_arguments(self, parser):
        parser.add_argument("--no-fleet", action="store_true", help="only groups and users")

    def handle(self, *args, **opts):
        roles.ensure_groups()
        password = os.environ.get("DEMO_PASSWORD") or settings.DEMO_PASSWORD_DEFAULT
        User = get_user_model()
        for name in DEMO_USERS:
            user, created = User.objects.get_or_create(username=name)
            # Every run sets the current DEMO_PASSWORD: running again with another one must not
            # silently keep the old password.
            user.set_password(password)
            user.is_staff = user.is_superuser = name == roles.ADMIN
            user.save()
            user.groups.set([Group.objects.get(name=name)])
        self.stdout.write(
            f"  demo users {', '.join(DEMO_USERS)}: password set to the current DEMO_PASSWORD"
            f"{'' if os.environ.get('DEMO_PASSWORD') else ' (the default)'}"
        )
        if not opts["no_fleet"]:
            self._register_fleet()
            self._onboard_demo_tenants()

    def _register_fleet(self):
        for spec in demo_targets(os.environ):
            upstream = Target.objects.get(name=spec.pop("upstream")) if "upstream" in spec else None
            target, _ = Target.objects.update_or_create(name=spec["name"], defaults={**spec, "upstream": upstream})
            probe = services.probe_target(target)
            state = f"up, PostgreSQL {probe.server_version}" if probe.ok else f"DOWN: {probe.error}"
            self.stdout.write(f"  {target.name:14} {target.dsn_display():40} {state}")
        if os.environ.get("PGBACKREST_CONFIG"):  # the local fleet's stanza (scripts/localfleet.py)
            from monitors.drills.physical import PhysicalBackupPolicy

            PhysicalBackupPolicy.objects.get_or_create(target=Target.objects.get(name="demo-primary"), defaults={
                "stanza": "demo", "config": os.environ["PGBACKREST_CONFIG"], "database": "demo",
                "smoke_queries": ["SELECT aid FROM pgbench_accounts LIMIT 1"]})
            self.stdout.write("  demo-primary: physical backups with pgBackRest, stanza demo")

    def _onboard_demo_tenants(self):
        """A few tenants of each strategy on demo-primary, onboarded by the worker once it runs."""
        from tenants import onboarding
        from tenants.models import Tenant

        if Tenant.objects.exists():
            return
        specs = [
            onboarding.TenantSpec("acme", "Acme Inc"),
            onboarding.TenantSpec("globex", "Globex Corporation"),
            onboarding.TenantSpec("initech", "Initech", Tenant.Strategy.DATABASE),
            onboarding.TenantSpec("umbrella", "Umbrella Corp", Tenant.Strategy.SHARED),
            onboarding.TenantSpec("hooli", "Hooli", Tenant.Strategy.SHARED),
        ]
        tenants = onboarding.create_tenants(specs, Target.objects.get(name="demo-primary"))
        job = onboarding.start_onboarding(tenants)
        self.stdout.write(f"  demo tenants: {', '.join(t.slug for t in tenants)} (onboarding job #{job.pk})")
