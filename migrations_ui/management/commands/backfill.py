"""Run a backfill, or pause, resume or cancel one, as from its page (audited)."""

from django.core.management.base import BaseCommand, CommandError

from console import jobs
from console.models import Job, Target
from migrations_ui import services
from migrations_ui.models import Backfill


class Command(BaseCommand):
    help = "backfill run --target T --table t --column c --set EXPR [--where COND] | backfill pause|resume|cancel ID"

    def add_arguments(self, parser):
        verbs = parser.add_subparsers(dest="verb", required=True)
        run = verbs.add_parser("run", help="check and start a backfill (a migrations.backfill job)")
        run.add_argument("--target", required=True)
        run.add_argument("--database", default="")
        run.add_argument("--schema", default="public")
        run.add_argument("--table", required=True)
        run.add_argument("--column", required=True, dest="set_column")
        run.add_argument("--set", required=True, dest="set_expression", help="one SQL expression")
        run.add_argument("--where", default="", help="one SQL condition; default every row")
        run.add_argument("--batch-target-ms", type=int)
        run.add_argument("--max-replica-lag-s", type=float)
        run.add_argument("--max-lock-waiters", type=int)
        run.add_argument("--throttle-retry-s", type=float)
        how = run.add_mutually_exclusive_group()
        how.add_argument("--wait", action="store_true", help="wait for the workers to finish it")
        how.add_argument("--here", action="store_true", help="run it in this process")
        for verb in ("pause", "resume", "cancel"):
            verbs.add_parser(verb, help=f"{verb} a backfill's job").add_argument("backfill_id", type=int)

    def handle(self, *args, **opts):
        if opts["verb"] == "run":
            return self._run(opts)
        backfill = Backfill.objects.select_related("job").filter(pk=opts["backfill_id"]).first()
        if backfill is None or backfill.job is None:
            raise CommandError(f"no backfill #{opts['backfill_id']} with a job")
        changed, message = jobs.control(backfill.job, opts["verb"], via="manage.py", backfill=backfill.pk)
        if not changed:
            raise CommandError(f"backfill #{backfill.pk}: {message}")
        self.stdout.write(f"backfill #{backfill.pk}: {message}")

    def _run(self, opts):
        target = Target.objects.filter(name=opts["target"]).first()
        if target is None:
            raise CommandError(f"no target named {opts['target']!r}")
        fields = ("database", "schema", "table", "set_column", "set_expression", "where", "batch_target_ms",
                  "max_replica_lag_s", "max_lock_waiters", "throttle_retry_s")
        try:
            backfill = services.create_backfill(target=target, enqueue=not opts["here"],
                                                **{name: opts[name] for name in fields})
        except services.BackfillRefused as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"backfill #{backfill.pk} (job #{backfill.job_id}): {backfill.spec().render()}")
        if opts["here"]:
            jobs.execute(backfill.job_id)
        elif not opts["wait"]:
            return
        job = jobs.wait_for(backfill.job_id, timeout_s=24 * 3600)
        if job.state != Job.State.SUCCEEDED:
            raise CommandError(f"backfill #{backfill.pk}: job #{job.pk} {job.state}: {job.error or job.wait_reason}")
        self.stdout.write(self.style.SUCCESS(f"backfill #{backfill.pk} succeeded: {job.result}"))
