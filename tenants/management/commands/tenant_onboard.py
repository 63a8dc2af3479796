"""Onboard one tenant, or many from a CSV file (slug,name[,strategy]), as one job."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from console import jobs
from console.models import Job, Target
from tenants import runners, services
from tenants.forms import parse_lines
from tenants.models import Tenant


class Command(BaseCommand):
    help = "Onboard tenants onto a target: --slug/--name for one, --csv FILE for many."

    def add_arguments(self, parser):
        parser.add_argument("--target", required=True, help="target name")
        parser.add_argument("--slug")
        parser.add_argument("--name", default="")
        parser.add_argument("--strategy", choices=Tenant.Strategy.values, default=Tenant.Strategy.SCHEMA)
        parser.add_argument("--csv", help="file of slug,name[,strategy] lines (a header line is allowed)")
        parser.add_argument("--run-here", action="store_true",
                            help="run the job in this process instead of on a worker, and wait for it")
        parser.add_argument("--wait", action="store_true", help="wait for the worker to finish the job")
        parser.add_argument("--parallelism", type=int, help=f"tenants at once (default TENANT_PARALLELISM={settings.TENANT_PARALLELISM})")

    def handle(self, *args, **opts):
        try:
            target = Target.objects.get(name=opts["target"])
        except Target.DoesNotExist:
            raise CommandError(f"no target named {opts['target']!r}") from None
        specs = []
        if opts["slug"]:
            specs.append(services.TenantSpec(opts["slug"], opts["name"] or opts["slug"], opts["strategy"]))
        if opts["csv"]:
            with open(opts["csv"], encoding="utf-8-sig") as file:
                try:
                    specs += parse_lines(file.read().splitlines(), opts["strategy"])
                except ValidationError as exc:
                    raise CommandError(" ".join(exc.messages)) from None
        if not specs:
            raise CommandError("give --slug, or --csv FILE")
        if opts["parallelism"]:
            settings.TENANT_PARALLELISM = max(1, opts["parallelism"])
        try:
            with transaction.atomic():
                tenants = services.create_tenants(specs, target)
                job = Job.objects.create(kind=runners.ONBOARD, target=target, tenant=tenants[0] if len(tenants) == 1 else None,
                                         progress_total=len(tenants) * len(Tenant.STEPS),
                                         params={"tenant_ids": [t.pk for t in tenants]})
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
