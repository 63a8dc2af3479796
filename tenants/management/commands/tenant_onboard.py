"""Onboard one tenant, or many from a CSV file (slug,name[,strategy]), as one job."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from console import audit, jobs
from console.models import Job
from tenants import onboarding
from tenants.management.jobcommand import add_job_arguments, target_and_parallelism
from tenants.forms import parse_lines
from tenants.models import Tenant


class Command(BaseCommand):
    help = "Onboard tenants onto a target: --slug/--name for one, --csv FILE for many."

    def add_arguments(self, parser):
        add_job_arguments(parser)
        parser.add_argument("--slug")
        parser.add_argument("--name", default="")
        parser.add_argument("--strategy", choices=Tenant.Strategy.values, default=Tenant.Strategy.SCHEMA)
        parser.add_argument("--csv", help="file of slug,name[,strategy] lines (a header line is allowed)")

    def handle(self, *args, **opts):
        target = target_and_parallelism(opts)
        specs = []
        if opts["slug"]:
            specs.append(onboarding.TenantSpec(opts["slug"], opts["name"] or opts["slug"], opts["strategy"]))
        if opts["csv"]:
            with open(opts["csv"], encoding="utf-8-sig") as file:
                try:
                    specs += parse_lines(file.read().splitlines(), opts["strategy"])
                except ValidationError as exc:
                    raise CommandError(" ".join(exc.messages)) from None
        if not specs:
            raise CommandError("give --slug, or --csv FILE")
        try:
            with transaction.atomic():
                tenants = onboarding.create_tenants(specs, target)
                job = onboarding.start_onboarding(tenants, send=False)
                audit.record(None, "tenant.onboard", job, detail={"tenants": [t.slug for t in tenants],
                                                                  "target": target.name, "via": "manage.py"})
        except ValidationError as exc:
            raise CommandError("\n".join(exc.messages)) from None
        self.stdout.write(f"job #{job.pk}: onboarding {len(tenants)} tenant(s) onto {target.name}")
        job = jobs.run_from_command(job.pk, run_here=opts["run_here"], wait=opts["wait"])
        if job is None:
            return
        for tenant in Tenant.objects.filter(pk__in=[t.pk for t in tenants]):
            detail = f" at {tenant.failed_step}: {tenant.error}" if tenant.state == Tenant.State.FAILED else ""
            self.stdout.write(f"  {tenant.slug:40} {tenant.state}{detail}")
        if job.state != Job.State.SUCCEEDED:
            raise CommandError(f"job #{job.pk} {job.state}: {job.error}")
        self.stdout.write(self.style.SUCCESS(f"job #{job.pk} succeeded in {job.duration_seconds():.1f} s"))
