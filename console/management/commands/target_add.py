import sys

from django.core.management.base import BaseCommand, CommandError

from console import audit, services
from console.forms import TargetForm
from console.models import Target


class Command(BaseCommand):
    help = "Register a target, after testing its connection (the same checks as the web form)."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--role", default="primary", choices=Target.Role.values)
        parser.add_argument("--upstream", help="name of the primary a replica follows or a PgBouncer fronts")
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=5432)
        parser.add_argument("--dbname", default="postgres")
        parser.add_argument("--user", default="fleet_monitor", help="the monitor login (pg_monitor, never a superuser)")
        secret = parser.add_mutually_exclusive_group()
        secret.add_argument("--password-env", default="", help="environment variable holding the monitor password")
        secret.add_argument("--password-stdin", action="store_true", help="read the monitor password from standard input")
        parser.add_argument("--change-user", default="", help="the change login (schema owner) for jobs that change schema")
        parser.add_argument("--change-password-env", default="", help="environment variable holding the change password")
        parser.add_argument("--heartbeat", action="store_true", help="primaries: write the heartbeat standbys measure lag from")
        parser.add_argument("--pool-size", type=int, default=5)
        parser.add_argument("--max-overflow", type=int, default=2)
        parser.add_argument("--tags", default="", help="comma separated")
        parser.add_argument("--save-unreachable", action="store_true", help="save even if the connection test fails")
        parser.add_argument("--update", action="store_true", help="update the target if it exists")

    def handle(self, *args, **opts):
        instance = Target.objects.filter(name=opts["name"]).first()
        if instance and not opts["update"]:
            raise CommandError(f"target {opts['name']} exists; pass --update to change it")
        upstream = None
        if opts["upstream"]:
            upstream = Target.objects.filter(name=opts["upstream"]).first()
            if upstream is None:
                raise CommandError(f"no target named {opts['upstream']}")
        defaults = Target()
        form = TargetForm(
            {
                "name": opts["name"], "role": opts["role"], "upstream": upstream.pk if upstream else "",
                "host": opts["host"], "port": opts["port"], "dbname": opts["dbname"], "username": opts["user"],
                "password_env": opts["password_env"],
                "password": sys.stdin.readline().rstrip("\n") if opts["password_stdin"] else "",
                "change_username": opts["change_user"], "change_password_env": opts["change_password_env"],
                "heartbeat_enabled": opts["heartbeat"],
                "pool_size": opts["pool_size"], "max_overflow": opts["max_overflow"],
                "pool_timeout_s": instance.pool_timeout_s if instance else defaults.pool_timeout_s,
                "pool_recycle_s": instance.pool_recycle_s if instance else defaults.pool_recycle_s,
                "connect_timeout_s": instance.connect_timeout_s if instance else defaults.connect_timeout_s,
                "tags_text": opts["tags"],
            },
            instance=instance,
        )
        if not form.is_valid():
            problems = "; ".join(f"{field}: {' '.join(errors)}" for field, errors in form.errors.items())
            raise CommandError(f"nothing saved: {problems}")
        target, probe = services.save_target(form, save_unreachable=opts["save_unreachable"])
        if target is None:
            raise CommandError(f"nothing saved: connection test failed: {probe.error} (pass --save-unreachable to save anyway)")
        audit.record(None, "target.update" if instance else "target.create", target, detail={"via": "manage.py", "reachable": probe.ok})
        state = f"up, PostgreSQL {probe.server_version}" if probe.ok else f"DOWN: {probe.error}"
        self.stdout.write(f"{'updated' if instance else 'added'} {target.name} ({target.dsn_display()}): {state}")
