"""Rollouts of the application's staged changes from the shell, for scripts and CI pipelines: the
staged changes and where the tenants are, a stage's rollout request (someone else approves it),
and each stage's latest rollout with its cells."""

from django.core.management.base import BaseCommand, CommandError

from migrations_ui import rollouts
from migrations_ui.management.operators import operator_named


class Command(BaseCommand):
    help = "rollout list | rollout request CHANGE STAGE --user NAME [--canary KEY] [--waves 2,10] | rollout status CHANGE"

    def add_arguments(self, parser):
        verbs = parser.add_subparsers(dest="verb", required=True)
        verbs.add_parser("list", help="the staged changes and how many active tenants are at each stage")
        request = verbs.add_parser("request", help="ask for a stage's rollout over the active tenants")
        request.add_argument("change")
        request.add_argument("stage")
        request.add_argument("--user", required=True, help="who asks (an operator); the approver must be someone else")
        request.add_argument("--canary", default="", help="the canary's key (target/slug); default: the smallest")
        request.add_argument("--waves", default=",".join(map(str, rollouts.DEFAULT_WAVES)), help="wave sizes, e.g. 2,10")
        request.add_argument("--parallelism", type=int, default=4)
        verbs.add_parser("status", help="each stage's latest rollout and its tenants").add_argument("change")

    def handle(self, *args, **opts):
        getattr(self, f"_{opts['verb']}")(opts)

    def _change(self, name):
        change = rollouts.staged_change(name)
        if change is None:
            known = ", ".join(c.name for c in rollouts.staged_changes()) or "none"
            raise CommandError(f"no staged change {name!r}; the application has: {known}")
        return change

    def _list(self, opts):
        for change in rollouts.staged_changes():
            at = ", ".join(f"{stage} {count}" for stage, count in rollouts.tenants_at(change))
            self.stdout.write(f"{change.name}: {change.description} (tenants at each stage: {at})")

    def _request(self, opts):
        change = self._change(opts["change"])
        user = operator_named(opts["user"], "migrations.rollout_request")  # as on the page
        try:
            waves = [int(size) for size in opts["waves"].split(",") if size.strip()]
            rollout = rollouts.request(change, opts["stage"], user, canary=opts["canary"], wave_sizes=waves,
                                       parallelism=opts["parallelism"])
        except (rollouts.RolloutRefused, ValueError) as exc:
            raise CommandError(str(exc)) from None
        approval = rollouts.approvals.latest(rollouts.ROLLOUT_APPROVAL, rollout)
        self.stdout.write(f"rollout #{rollout.pk} of {opts['stage']} ({rollout.revision}) over {len(rollout.units)} "
                          f"tenant(s), waves {[len(w) for w in rollout.waves]} (the canary first): approval "
                          f"#{approval.pk} requested by {user.get_username()}, someone else approves it at "
                          f"{approval.get_absolute_url()}")

    def _status(self, opts):
        change = self._change(opts["change"])
        stages, rows = rollouts.grid(change)
        for index, stage in enumerate(stages):
            rollout, approval = stage["rollout"], stage["approval"]
            job = rollout.job if rollout else None
            head = (f"#{rollout.pk}, approval {approval.get_decision_display().lower() if approval else 'none'}, "
                    f"job {job.get_state_display().lower() if job else 'not started'}") if rollout else "no rollout"
            self.stdout.write(f"{stage['staged'].stage} ({stage['staged'].revision}): {head}")
            for row in rows:
                cell = row["cells"][index]
                extra = f" {cell.duration_ms:.0f} ms" if cell.duration_ms is not None else ""
                self.stdout.write(f"  {row['key']}: {cell.label}{extra}{': ' + cell.error if cell.error else ''}")
