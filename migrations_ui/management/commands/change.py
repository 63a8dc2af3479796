"""A console-authored change from the shell, for scripts and CI pipelines: its plan, a stage's
approval request, and where each stage stands."""

from django.core.management.base import BaseCommand, CommandError

from console.models import Job
from migrations_ui import changes, plans
from migrations_ui.models import Change
from migrations_ui.management.operators import operator_named


class Command(BaseCommand):
    help = "change plan ID | change request ID STAGE --user NAME | change status ID"

    def add_arguments(self, parser):
        verbs = parser.add_subparsers(dest="verb", required=True)
        verbs.add_parser("plan", help="each stage's exact SQL, its locks and the lint findings").add_argument("change_id", type=int)
        request = verbs.add_parser("request", help="ask for a stage's approval (someone else approves it)")
        request.add_argument("change_id", type=int)
        request.add_argument("stage", choices=Change.STAGES)
        request.add_argument("--user", required=True, help="who asks (an operator); the approver must be someone else")
        verbs.add_parser("status", help="each stage's latest approval and job").add_argument("change_id", type=int)

    def handle(self, *args, **opts):
        change = Change.objects.select_related("target").filter(pk=opts["change_id"]).first()
        if change is None:
            raise CommandError(f"no change #{opts['change_id']}")
        getattr(self, f"_{opts['verb']}")(change, opts)

    def _plan(self, change, opts):
        stages, squawk_ran = plans.change_plan(change)
        self.stdout.write(f"change #{change.pk}: {change} ({'squawk and ' if squawk_ran else ''}the console's checks)")
        for stage in stages:
            self.stdout.write(f"\n-- stage {stage.name}" + (f" ({stage.note})" if stage.note else ""))
            for statement in stage.statements:
                taken = ", ".join(f"{lock.level} on {lock.table or 'the table'}" + (" (brief)" if lock.brief else "")
                                  for lock in statement.locks) or "no table lock"
                self.stdout.write(f"{statement.sql}\n   -- locks: {taken}")
                for finding in statement.findings:
                    mark = "UNSAFE" if finding.flags else "note"
                    self.stdout.write(f"   -- {mark}: {finding.describe()}" + (f" ({finding.covered})" if finding.covered else ""))
        if changes.flagged(change) and not change.override_reason:
            self.stdout.write(self.style.WARNING("\nflagged statements: override them with a reason on the plan page first"))

    def _request(self, change, opts):
        user = operator_named(opts["user"], "migrations.stage_request")  # as on the page
        try:
            approval = changes.request_stage_approval(change, opts["stage"], user)
        except changes.ChangeRefused as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"approval #{approval.pk} of stage {opts['stage']} requested by {user.get_username()}: "
                          f"someone else approves it at {approval.get_absolute_url()}")

    def _status(self, change, opts):
        by_stage = {}
        for approval in changes.stage_approvals(change):
            by_stage.setdefault(approval.shown.get("stage"), approval)  # newest first
        for stage in change.stages():
            approval = by_stage.get(stage.name)
            if approval is None:
                self.stdout.write(f"{stage.name:9} not requested")
                continue
            job = Job.objects.filter(kind=changes.STAGE_JOB, params__approval=approval.pk).first()
            ran = f", job #{job.pk} {job.state}" + (f": {job.error}" if job.error else "") if job else ""
            self.stdout.write(f"{stage.name:9} approval #{approval.pk} {approval.get_decision_display().lower()}{ran}")
