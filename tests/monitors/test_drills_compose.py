"""Under docker compose, backups go to a named volume on the worker (the destination directory of
policies without one), created in the image owned by the console user."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_it_keeps_backups_on_a_volume_the_worker_mounts_at_backup_dir():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    worker = compose["services"]["worker"]
    backup_dir = worker["environment"]["BACKUP_DIR"]

    assert f"backups:{backup_dir}" in worker["volumes"]
    assert "backups" in compose["volumes"]
    dockerfile = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    assert re.search(rf"install -d -o console -g console -m 0750 {re.escape(backup_dir)}", dockerfile)
