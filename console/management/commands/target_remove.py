from django.core.management.base import BaseCommand, CommandError
from django.db.models import ProtectedError

from console import audit, engines
from console.models import Target


class Command(BaseCommand):
    help = "Remove a target from the registry (the server itself is not touched)."

    def add_arguments(self, parser):
        parser.add_argument("name")

    def handle(self, *args, **opts):
        target = Target.objects.filter(name=opts["name"]).first()
        if target is None:
            raise CommandError(f"no target named {opts['name']}")
        target_id = target.pk
        try:
            target.delete()
        except ProtectedError as exc:
            names = ", ".join(sorted(str(o) for o in exc.protected_objects))
            raise CommandError(f"{opts['name']} is still used by {names}; remove those first") from exc
        engines.forget(target_id)
        audit.record(None, "target.delete", detail={"name": opts["name"], "id": target_id, "via": "manage.py"})
        self.stdout.write(f"removed {opts['name']}")
