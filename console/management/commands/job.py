from django.core.management.base import BaseCommand, CommandError

from console import jobs
from console.models import Job


class Command(BaseCommand):
    help = "Pause, resume, cancel or retry a job, as from its page (audited)."

    def add_arguments(self, parser):
        parser.add_argument("verb", choices=sorted(jobs.CONTROLS))
        parser.add_argument("job_id", type=int)

    def handle(self, *args, **opts):
        job = Job.objects.filter(pk=opts["job_id"]).first()
        if job is None:
            raise CommandError(f"no job #{opts['job_id']}")
        changed, message = jobs.control(job, opts["verb"], via="manage.py")
        if not changed:
            raise CommandError(f"job #{job.pk}: {message}")
        self.stdout.write(f"job #{job.pk}: {message}")
