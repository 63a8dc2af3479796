"""Prometheus families of backups and drills, per target database (and tenant): the last verified
backup's time, the last drill's RTO, RPO and result, the last backup's size. From the console DB.
A tenant is labelled by its id, never its slug: /metrics is scraped without a login, and the
customers' names are not for anyone who can reach it."""

from django.db.models import Max, Q
from prometheus_client.core import GaugeMetricFamily

from monitors.drills.models import Backup, DrillRun

LABELS = ["target", "database", "tenant_id"]


def families(names: dict[int, str]):
    verified_at = GaugeMetricFamily("fleet_backup_last_verified_timestamp_seconds",
                                    "Unix time of the snapshot of the newest backup a drill verified", labels=LABELS)
    backup_bytes = GaugeMetricFamily("fleet_backup_last_bytes", "Size of the newest finished backup", labels=LABELS)
    rto = GaugeMetricFamily("fleet_drill_last_rto_seconds", "RTO of the last passing drill: start to verified", labels=LABELS)
    rpo = GaugeMetricFamily("fleet_drill_last_rpo_seconds", "RPO of the last drill: its start minus the backup's snapshot",
                            labels=LABELS)
    passed = GaugeMetricFamily("fleet_drill_last_passed", "1 if the last finished drill passed, 0 if it failed", labels=LABELS)

    def labels(target_id, database, tenant_id):
        return [names.get(target_id, str(target_id)), database, str(tenant_id or "")]

    scopes = Backup.objects.values("target_id", "database", "tenant_id").annotate(
        verified=Max("snapshot_at", filter=Q(verified_at__isnull=False, state=Backup.State.DONE)),
        last_done=Max("id", filter=Q(state=Backup.State.DONE)))
    sizes = dict(Backup.objects.filter(pk__in=[s["last_done"] for s in scopes if s["last_done"]])
                 .values_list("pk", "size_bytes"))
    for scope in scopes:
        key = labels(scope["target_id"], scope["database"], scope["tenant_id"])
        if scope["verified"] is not None:
            verified_at.add_metric(key, scope["verified"].timestamp())
        if sizes.get(scope["last_done"]) is not None:
            backup_bytes.add_metric(key, sizes[scope["last_done"]])
    finished = DrillRun.objects.filter(finished_at__isnull=False, passed__isnull=False, backup__isnull=False)
    add_last_outcomes(finished, ("backup__target_id", "backup__database", "backup__tenant_id"),
                      lambda run: labels(run.backup.target_id, run.backup.database, run.backup.tenant_id),
                      passed=passed, rpo=rpo, rto=rto, related=("backup",))
    yield from (verified_at, backup_bytes, rto, rpo, passed)


def add_last_outcomes(finished, scope: tuple[str, ...], key_of, *, passed, rpo, rto, related=()) -> None:
    """Per `scope` of the `finished` drill runs: whether the last one passed and its RPO, and the
    RTO of the last passing one (a failed drill has no RTO worth a gauge)."""
    last = {r["last"] for r in finished.values(*scope).annotate(last=Max("id"))}
    last_passing = {r["last"] for r in finished.filter(passed=True).values(*scope).annotate(last=Max("id"))}
    for run in finished.model.objects.filter(pk__in=last | last_passing).select_related(*related):
        key = key_of(run)
        if run.pk in last:
            passed.add_metric(key, 1 if run.passed else 0)
            if run.rpo_s is not None:
                rpo.add_metric(key, run.rpo_s)
        if run.pk in last_passing and run.rto_s is not None:
            rto.add_metric(key, run.rto_s)
