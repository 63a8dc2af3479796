"""The job page's links to what backup and drill jobs made: the drill runs and backups of a job."""

from django.urls import reverse

from console import jobs
from monitors.drills.models import Backup, DrillRun
from monitors.drills.physical import PitrDrillRun


@jobs.subject_links
def drill_links(job) -> list[tuple[str, str]]:
    if not job.kind.startswith(("drills.", "pitr.")):
        return []
    links = [(f"Drill run #{run.pk}", reverse("drill-run-detail", args=[run.pk]))
             for run in DrillRun.objects.filter(job=job).order_by("pk")]
    links += [(f"Backup #{backup.pk} of {backup.database}",  # listed with its policy's, else with the fleet's
               reverse("drill-policy", args=[backup.policy_id]) if backup.policy_id else reverse("drill-backups"))
              for backup in Backup.objects.filter(job=job).order_by("pk")]
    links += [(f"PITR drill #{run.pk}", run.get_absolute_url()) for run in PitrDrillRun.objects.filter(job=job)]
    return links
