"""Bring every active tenant on a target to the application's head, as one job."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from console import jobs
from console.models import Job, Target
from tenants import migrator, runners


class Command(BaseCommand):
    help = "Migrate every active tenant on --target to head, with bounded parallelism."

    def add_arguments(self, parser):
        parser.add_argument("--target", required=True, help="target name")
        parser.add_argument("--run-here", action="store_true",
                            help="run the job in this process instead of on a worker, and wait for it")
        parser.add_argument("--wait", action="store_true", help="wait for the worker to finish the job")
        parser.add_argument("--parallelism", type=int, help=f"tenants at once (default TENANT_PARALLELISM={settings.TENANT_PARALLELISM})")

    def handle(self, *args, **opts):
        try:
            target = Target.objects.get(name=opts["target"])
        except Target.DoesNotExist:
            raise CommandError(f"no target named {opts['target']!r}") from None
        if opts["parallelism"]:
            settings.TENANT_PARALLELISM = max(1, opts["parallelism"])
        job = Job.objects.create(kind=runners.MIGRATE, target=target, params={"target_id": target.pk})
        self.stdout.write(f"job #{job.pk}: every active tenant on {target.name} to {migrator.head()}")
        job = jobs.run_from_command(job.pk, run_here=opts["run_here"], wait=opts["wait"])
        if job is None:
            return
        for line in job.log_lines.all():
            self.stdout.write(f"  {line.message}")
        if job.state != Job.State.SUCCEEDED:
            raise CommandError(f"job #{job.pk} {job.state}: {job.error}")
        self.stdout.write(self.style.SUCCESS(f"job #{job.pk} succeeded: {job.result}"))
