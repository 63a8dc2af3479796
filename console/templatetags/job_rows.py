"""For templates/console/_job_rows.html: which of the jobs shown are still unfinished (the rows
then poll console.views.jobs.job_rows until none is)."""

from django import template

register = template.Library()


@register.filter
def unfinished_job_ids(jobs) -> str:
    """The ids of all the jobs, comma-separated, if any is unfinished; "" if every one is finished."""
    jobs = list(jobs)
    return ",".join(str(job.pk) for job in jobs) if any(not job.is_finished for job in jobs) else ""
