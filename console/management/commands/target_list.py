from django.core.management.base import BaseCommand

from console.models import Target


class Command(BaseCommand):
    help = "List the registered targets (never their passwords)."

    def handle(self, *args, **opts):
        rows = [("NAME", "ROLE", "UPSTREAM", "ADDRESS", "STATUS", "VERSION", "TAGS")]
        for t in Target.objects.select_related("upstream"):
            rows.append((t.name, t.role, t.upstream.name if t.upstream else "-", t.dsn_display(), t.status,
                         t.server_version or "-", ",".join(t.tags) or "-"))
        widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            self.stdout.write("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())
