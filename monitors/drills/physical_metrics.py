"""Prometheus families of physical backups and PITR drills, per target: the newest backup of each
type (as pgbackrest info last listed it) and its size in the repository, the last PITR drill's
result, RTO and RPO. From the console DB."""

from django.db.models import Max
from prometheus_client.core import GaugeMetricFamily

from monitors.drills.physical import PhysicalBackup, PitrDrillRun


def families(names: dict[int, str]):
    stopped = GaugeMetricFamily("fleet_physical_backup_last_timestamp_seconds",
                                "Unix time the newest pgBackRest backup of a type stopped", labels=["target", "type"])
    repo_bytes = GaugeMetricFamily("fleet_physical_backup_last_repo_bytes",
                                   "Repository size of the newest pgBackRest backup of a type", labels=["target", "type"])
    newest = PhysicalBackup.objects.filter(expired_at__isnull=True).values("target_id", "type").annotate(last=Max("stopped_at"))
    for row in newest:
        backup = PhysicalBackup.objects.filter(target_id=row["target_id"], type=row["type"], stopped_at=row["last"]).first()
        key = [names.get(row["target_id"], str(row["target_id"])), row["type"]]
        stopped.add_metric(key, row["last"].timestamp())
        repo_bytes.add_metric(key, backup.repo_size_bytes)
    rto = GaugeMetricFamily("fleet_pitr_drill_last_rto_seconds", "RTO of the last passing PITR drill: start to verified",
                            labels=["target"])
    rpo = GaugeMetricFamily("fleet_pitr_drill_last_rpo_seconds",
                            "RPO of the last PITR drill: its moment minus the newest heartbeat replayed", labels=["target"])
    passed = GaugeMetricFamily("fleet_pitr_drill_last_passed", "1 if the last finished PITR drill passed, 0 if it failed",
                               labels=["target"])
    finished = PitrDrillRun.objects.filter(finished_at__isnull=False, passed__isnull=False)
    last = [r["last"] for r in finished.values("target_id").annotate(last=Max("id"))]
    last_passing = [r["last"] for r in finished.filter(passed=True).values("target_id").annotate(last=Max("id"))]
    for run in PitrDrillRun.objects.filter(pk__in=last + last_passing):
        key = [names.get(run.target_id, str(run.target_id))]
        if run.pk in last:
            passed.add_metric(key, 1 if run.passed else 0)
            if run.rpo_s is not None:
                rpo.add_metric(key, run.rpo_s)
        if run.pk in last_passing and run.rto_s is not None:
            rto.add_metric(key, run.rto_s)
    yield from (stopped, repo_bytes, rto, rpo, passed)
