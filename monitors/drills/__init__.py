"""Backups and restore drills: policies, backups with their manifests, drill runs with their
verification (models.py); the backup job and retention (backups.py); the drill job and the
sweeper of scratch databases (restores.py)."""
