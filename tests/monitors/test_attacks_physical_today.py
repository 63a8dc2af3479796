"""The physical backup policy form (operators) tried as an attacker would, on the suite's real
pgBackRest stanza: the configuration file and the user pgBackRest runs as are the operator's to
name, and so are the drill server's settings. Nothing an operator types may show a file's
contents, run pgBackRest as root, or make the drill's server run a command or load a library.
Cases marked xfail are findings in /work/notes/attack-findings.md."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from django.urls import reverse

from monitors.drills.physical import PhysicalBackupPolicy
from tests.monitors.test_pitr import drill_dir, marks, policy  # noqa: F401  (fixtures: the suite's stanza)

SECRET_LINE = "127.0.0.1:5432:*:fleet_owner:Pgpass-Secret-77"


def _form(fleet, **changes):
    data = {"stanza": "demo", "config": fleet.env()["PGBACKREST_CONFIG"], "run_as": "", "full_every_hours": "168",
            "diff_every_hours": "24", "incr_every_hours": "", "retention_full": "2", "retention_diff": "",
            "max_backup_age_h": "26", "max_wal_age_s": "900", "drill_every_hours": "24", "drill_delay_s": "600",
            "database": "demo", "smoke_queries": "SELECT 1", "server_settings": "shared_buffers = 64MB"}
    return {**data, **changes}


def _refused(response) -> bool:
    page = response.content.decode()
    return response.status_code == 200 and any(m in page for m in ('class="error', 'class="errorlist', 'role="alert"'))


@pytest.fixture
def secret_file():
    """A file like ~postgres/.pgpass, readable by the PITR service user (and root)."""
    folder = Path(tempfile.mkdtemp(prefix="attack-", dir="/tmp"))
    folder.chmod(0o755)
    secret = folder / "pgpass"
    secret.write_text(SECRET_LINE + "\n")
    secret.chmod(0o644)
    yield secret
    shutil.rmtree(folder, ignore_errors=True)


def test_it_saves_the_valid_form_these_cases_start_from(demo_targets, fleet, client_as):
    target = demo_targets["demo-primary"]
    response = client_as("operator").post(reverse("physical-policy", args=[target.pk]), _form(fleet))
    assert response.status_code == 302 and PhysicalBackupPolicy.objects.count() == 1


@pytest.mark.parametrize("run_as", ["", "root"], ids=["service-user", "root"])
def test_it_never_shows_the_lines_of_a_file_named_as_the_pgbackrest_configuration(run_as, secret_file, demo_targets,
                                                                                   fleet, client_as):
    target = demo_targets["demo-primary"]

    response = client_as("operator").post(reverse("physical-policy", args=[target.pk]),
                                          _form(fleet, config=str(secret_file), run_as=run_as))

    page = response.content.decode()
    assert response.status_code == 200 and not PhysicalBackupPolicy.objects.exists()
    assert "Pgpass-Secret-77" not in page, "pgBackRest echoed the file's first line onto the page"


@pytest.mark.parametrize("run_as", [
    "root", "-u", "nobody --", "daemon"])
def test_it_refuses_to_run_pgbackrest_as_a_user_the_operator_names(run_as, demo_targets, fleet, client_as):
    if os.geteuid() != 0:
        pytest.skip("run_as only matters when the worker runs as root")
    target = demo_targets["demo-primary"]

    response = client_as("operator").post(reverse("physical-policy", args=[target.pk]), _form(fleet, run_as=run_as))

    assert _refused(response)
    assert not PhysicalBackupPolicy.objects.exists()


DANGEROUS_SETTINGS = [
    "restore_command = touch /tmp/attack-restore; false",
    "recovery_end_command = touch /tmp/attack-recovery-end",
    "archive_cleanup_command = touch /tmp/attack-cleanup",
    "ssl_passphrase_command = touch /tmp/attack-ssl",
    "shared_preload_libraries = /tmp/attack.so",
    "local_preload_libraries = /tmp/attack.so",
    "session_preload_libraries = /tmp/attack.so",
    "dynamic_library_path = /tmp",
    "hba_file = /tmp/attack_hba.conf",
    "ident_file = /tmp/attack_ident.conf",
    "data_directory = /var/lib/postgresql",
    "config_file = /tmp/attack.conf",
    "include = /tmp/attack.conf",
    "include_dir = /tmp",
    "log_directory = /etc",
]


@pytest.mark.parametrize("setting", DANGEROUS_SETTINGS, ids=[s.split(" =")[0] for s in DANGEROUS_SETTINGS])
def test_it_refuses_drill_server_settings_that_run_commands_load_code_or_move_files(setting, demo_targets, fleet,
                                                                                     client_as):
    target = demo_targets["demo-primary"]

    response = client_as("operator").post(reverse("physical-policy", args=[target.pk]),
                                          _form(fleet, server_settings=setting))

    assert _refused(response)
    assert not PhysicalBackupPolicy.objects.exists()


@pytest.mark.parametrize("setting", ["archive_command = touch /tmp/x", "port = 1", "listen_addresses = *",
                                     "Shared_Buffers = 1", "a b = 1", "x; DROP = 1", "shared_buffers"])
def test_it_refuses_the_drills_own_settings_and_malformed_lines(setting, demo_targets, fleet, client_as):
    target = demo_targets["demo-primary"]
    response = client_as("operator").post(reverse("physical-policy", args=[target.pk]),
                                          _form(fleet, server_settings=setting))
    assert _refused(response)
    assert not PhysicalBackupPolicy.objects.exists()


BAD_NUMBERS = [{"full_every_hours": "0"}, {"full_every_hours": "100000"}, {"drill_every_hours": "0"},
               {"incr_every_hours": "9000"}, {"max_backup_age_h": "0"}]


@pytest.mark.parametrize("changes", BAD_NUMBERS, ids=[next(iter(c)) + "-" + next(iter(c.values())) for c in BAD_NUMBERS])
def test_it_refuses_hours_outside_the_physical_forms_own_bounds(changes, demo_targets, fleet, client_as):
    target = demo_targets["demo-primary"]
    response = client_as("operator").post(reverse("physical-policy", args=[target.pk]), _form(fleet, **changes))
    assert _refused(response)
    assert not PhysicalBackupPolicy.objects.exists()


@pytest.mark.parametrize("changes", [{"retention_full": "0"}, {"retention_full": "-1"}, {"max_wal_age_s": "-5"},
                                     {"retention_full": "99999999999999999999"}, {"stanza": "--repo1-path=/"},
                                     {"stanza": "demo --repo1-path=/"}, {"config": "../pgbackrest.conf"},
                                     {"config": "--repo1-path=/"}, {"database": 'demo" OR 1=1'},
                                     {"smoke_queries": "SELECT 1; DROP TABLE pgbench_accounts"}])
def test_it_refuses_other_hostile_physical_policy_fields(changes, demo_targets, fleet, client_as):
    target = demo_targets["demo-primary"]
    response = client_as("operator").post(reverse("physical-policy", args=[target.pk]), _form(fleet, **changes))
    assert _refused(response)
    assert not PhysicalBackupPolicy.objects.exists()


def test_it_refuses_the_physical_policy_form_to_a_viewer_and_for_a_missing_target(demo_targets, fleet, client_as):
    assert client_as("viewer").post(reverse("physical-policy", args=[demo_targets["demo-primary"].pk]),
                                    _form(fleet)).status_code == 403
    assert client_as("operator").post(reverse("physical-policy", args=[999999]), _form(fleet)).status_code == 404
    assert not PhysicalBackupPolicy.objects.exists()


def test_it_runs_no_command_an_operator_put_in_the_drill_servers_settings(transactional_db, fleet, run_here, marks,
                                                                          drill_dir, policy):
    """End to end: the setting is stored as the form takes it; a real backup and PITR drill follow."""
    from console import jobs
    from tests.monitors.test_pitr import backup_now, two_writes

    marker = Path(tempfile.gettempdir()) / f"attack-recovery-end-{os.getpid()}-{policy.pk}"
    marker.unlink(missing_ok=True)
    PhysicalBackupPolicy.objects.filter(pk=policy.pk).update(
        server_settings={"recovery_end_command": f"touch {marker}"})
    backup_now(run_here, policy)
    moment = two_writes(fleet, policy)

    run_here(jobs.create("pitr.drill", target=policy.target, params={"target_at": moment.isoformat()}, send=False))

    ran = marker.exists()
    marker.unlink(missing_ok=True)
    assert not ran, "the drill's server ran the operator's recovery_end_command on the worker's host"


@pytest.mark.parametrize("changes", [{"retention_full": "1"}, {"retention_diff": "1"}], ids=["full", "diff"])
def test_it_waits_for_another_approver_before_pgbackrest_keeps_fewer_backups(changes, demo_targets, fleet, client_as):
    """As for a logical policy's retention (four eyes): an operator alone cannot lower what pgBackRest
    keeps, which its expire removes right after the next backup."""
    from console.models import Approval

    target = demo_targets["demo-primary"]
    url = reverse("physical-policy", args=[target.pk])
    client_as("operator").post(url, _form(fleet, retention_full="3", retention_diff="3"))
    assert PhysicalBackupPolicy.objects.get().retention_full == 3

    client_as("operator").post(url, _form(fleet, **{"retention_full": "3", "retention_diff": "3", **changes}))

    policy = PhysicalBackupPolicy.objects.get()
    assert (policy.retention_full, policy.retention_diff) == (3, 3), "lowered at once, by the operator alone"
    assert Approval.objects.filter(decision=Approval.Decision.PENDING).exists()


@pytest.mark.parametrize("other", ["demo-scratch", "demo-bouncer"])
def test_it_refuses_another_servers_stanza_as_a_targets_physical_policy(other, demo_targets, fleet, client_as):
    """Stanza demo is demo-primary's (its system identifier): named for another target, that target's
    'drills' would restore demo-primary, and its retention would expire demo-primary's backups."""
    response = client_as("operator").post(reverse("physical-policy", args=[demo_targets[other].pk]), _form(fleet))

    assert _refused(response)
    assert not PhysicalBackupPolicy.objects.exists()
