"""Bring every active tenant on a target to the application's head, as one job."""

from django.core.management.base import BaseCommand, CommandError

from console import jobs
from console.models import Job
from tenants import migrator
from tenants.models import MIGRATE
from tenants.management.jobcommand import add_job_arguments, target_and_parallelism


class Command(BaseCommand):
    help = "Migrate every active tenant on --target to head, with bounded parallelism."

    def add_arguments(self, parser):
        add_job_arguments(parser)

    def handle(self, *args, **opts):
        target = target_and_parallelism(opts)
        job = jobs.create(MIGRATE, target=target, params={"target_id": target.pk}, send=False)
        self.stdout.write(f"job #{job.pk}: every active tenant on {target.name} to {migrator.head()}")
        job = jobs.run_from_command(job.pk, run_here=opts["run_here"], wait=opts["wait"])
        if job is None:
            return
        for line in job.log_lines.all():
            self.stdout.write(f"  {line.message}")
        if job.state != Job.State.SUCCEEDED:
            raise CommandError(f"job #{job.pk} {job.state}: {job.error}")
        self.stdout.write(self.style.SUCCESS(f"job #{job.pk} succeeded: {job.result}"))
