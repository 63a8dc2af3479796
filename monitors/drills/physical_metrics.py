"""Prometheus families of physical backups and PITR drills, per target: the newest backup of each
type (as pgbackrest info last listed it) and its size in the repository, the last PITR drill's
result, RTO and RPO. From the console DB."""

from prometheus_client.core import GaugeMetricFamily

from monitors.drills.metrics import add_last_outcomes
from monitors.drills.physical import PhysicalBackup, PitrDrillRun


def families(names: dict[int, str]):
    stopped = GaugeMetricFamily("fleet_physical_backup_last_timestamp_seconds",
                                "Unix time the newest pgBackRest backup of a type stopped", labels=["target", "type"])
    repo_bytes = GaugeMetricFamily("fleet_physical_backup_last_repo_bytes",
                                   "Repository size of the newest pgBackRest backup of a type", labels=["target", "type"])
    newest = {}  # (target id, type) -> its newest backup, in one query
    for backup in PhysicalBackup.objects.filter(expired_at__isnull=True).order_by("stopped_at", "id"):
        newest[backup.target_id, backup.type] = backup
    for (target_id, kind), backup in newest.items():
        key = [names.get(target_id, str(target_id)), kind]
        stopped.add_metric(key, backup.stopped_at.timestamp())
        repo_bytes.add_metric(key, backup.repo_size_bytes)
    rto = GaugeMetricFamily("fleet_pitr_drill_last_rto_seconds", "RTO of the last passing PITR drill: start to verified",
                            labels=["target"])
    rpo = GaugeMetricFamily("fleet_pitr_drill_last_rpo_seconds",
                            "RPO of the last PITR drill: its moment minus the newest heartbeat replayed", labels=["target"])
    passed = GaugeMetricFamily("fleet_pitr_drill_last_passed", "1 if the last finished PITR drill passed, 0 if it failed",
                               labels=["target"])
    finished = PitrDrillRun.objects.filter(finished_at__isnull=False, passed__isnull=False)
    add_last_outcomes(finished, ("target_id",), lambda run: [names.get(run.target_id, str(run.target_id))],
                      passed=passed, rpo=rpo, rto=rto)
    yield from (stopped, repo_bytes, rto, rpo, passed)
