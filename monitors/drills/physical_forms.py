"""The physical backup policy form (operators): the target's pgBackRest stanza and configuration,
when to back up and drill, pgBackRest's retention, the alert ages, the drill's smoke queries and
its server's settings. Saved only once `pgbackrest info` reads the stanza with these settings."""

import os

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator

from console import engines
from console.models import Target
from console.pg import pgbackrest, pitr_server
from console.validators import validate_pg_name
from monitors.drills.physical import PhysicalBackupPolicy
from monitors.drills.restores import check_smoke_query

HOURS_MAX = 24 * 366
RETENTION_MAX = 10_000


class PhysicalPolicyForm(forms.ModelForm):
    smoke_queries = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One SELECT per line, run on the restored copy; each must return at least one row.")
    server_settings = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), label="Settings of the drill's server",
        help_text="name = value per line, for a smaller drill host (shared_buffers = 128MB): resource settings only "
                  "(memory, connections, parallel workers, jit, recovery_min_apply_delay...).")

    class Meta:
        model = PhysicalBackupPolicy
        fields = ["stanza", "config", "run_as", "full_every_hours", "diff_every_hours", "incr_every_hours",
                  "retention_full", "retention_diff", "max_backup_age_h", "max_wal_age_s", "drill_every_hours",
                  "drill_delay_s", "database", "smoke_queries", "server_settings"]
        labels = {
            "config": "pgBackRest configuration file", "run_as": "Run pgBackRest as",
            "full_every_hours": "Full backup every N hours", "diff_every_hours": "Differential every N hours",
            "incr_every_hours": "Incremental every N hours", "retention_full": "Keep N full backups (repo1-retention-full)",
            "retention_diff": "Keep N differentials (repo1-retention-diff)",
            "max_backup_age_h": "Alert without a backup for (hours)",
            "max_wal_age_s": "Alert when the newest archived WAL is older than (seconds, while WAL waits)",
            "drill_every_hours": "PITR drill every N hours", "drill_delay_s": "Drill to now minus (seconds)",
            "database": "Database of the smoke queries",
        }
        help_texts = {
            "config": "An absolute path on the worker's host, where the stanza's data directory and repository are.",
            "run_as": "Empty: the PITR_SERVICE_USER setting (when the worker runs as root).",
            "full_every_hours": "Empty: by hand only. A due full counts for the differential and incremental.",
            "drill_delay_s": "Empty: the PITR_DRILL_DELAY_S setting.",
            "database": "Empty: the target's database.",
        }

    def __init__(self, *args, target=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.target = target
        # Validators, not min_value/max_value: a field builds its validators when it is made.
        bounds = {"full_every_hours": HOURS_MAX, "diff_every_hours": HOURS_MAX, "incr_every_hours": HOURS_MAX,
                  "drill_every_hours": HOURS_MAX, "max_backup_age_h": HOURS_MAX, "retention_full": RETENTION_MAX,
                  "retention_diff": RETENTION_MAX}
        for name, maximum in bounds.items():
            self.fields[name].validators += [MinValueValidator(1), MaxValueValidator(maximum)]
            self.fields[name].widget.attrs.update(min=1, max=maximum)
        self.fields["config"].help_text = f"One of {', '.join(settings.PITR_PGBACKREST_CONFIGS)} (PITR_PGBACKREST_CONFIGS)."
        self.fields["run_as"].help_text = (f"Empty: {settings.PITR_SERVICE_USER} (PITR_SERVICE_USER). Or one of "
                                           f"{', '.join(settings.PITR_RUN_AS_USERS)} (PITR_RUN_AS_USERS).")
        if self.instance.pk:
            self.initial["smoke_queries"] = "\n".join(self.instance.smoke_queries)
            self.initial["server_settings"] = "\n".join(f"{k} = {v}" for k, v in self.instance.server_settings.items())

    def clean_smoke_queries(self) -> list[str]:
        queries = [line.strip() for line in self.cleaned_data["smoke_queries"].splitlines() if line.strip()]
        for query in queries:
            try:
                check_smoke_query(query)
            except ValueError as exc:
                raise ValidationError(f"{query}: {exc}") from exc
        return queries

    def clean_server_settings(self) -> dict[str, str]:
        found = {}
        for line in self.cleaned_data["server_settings"].splitlines():
            if not line.strip():
                continue
            name, sep, value = line.partition("=")
            if not sep:
                raise ValidationError(f"{line.strip()!r} is not name = value")
            found[name.strip()] = value.strip()
        try:
            return pitr_server.check_settings(found)
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc

    def clean_config(self) -> str:
        config = self.cleaned_data["config"].strip()
        if not os.path.isabs(config):
            raise ValidationError("an absolute path on the worker's host, one of the PITR_PGBACKREST_CONFIGS setting")
        return config

    def _refused_stanza(self, cleaned) -> str:
        """Why this stanza cannot be this target's ("" when it can)."""
        try:
            stanza = pgbackrest.Stanza(config=cleaned["config"], name=cleaned["stanza"], run_as=cleaned.get("run_as") or "")
        except ValueError as exc:
            return str(exc)
        refused = pgbackrest.refusal(stanza)
        if refused:
            return refused
        other = PhysicalBackupPolicy.objects.filter(stanza=stanza.name).exclude(target=self.target).first()
        if other is not None:
            return f"stanza {stanza.name} is already {other.target.name}'s: one stanza backs one server up"
        try:
            info = pgbackrest.info(stanza)
        except (pgbackrest.PgBackRestFailed, ValueError) as exc:
            return f"pgBackRest cannot read this stanza: {exc}"
        if info.status_code not in (0, 2):  # 2: no backup yet, which is fine
            return f"pgBackRest reports stanza {info.name}: {info.status}"
        try:
            with engines.connect(self.target) as conn:
                system_id = pgbackrest.system_identifier(conn)
        except Exception as exc:  # the target down, or no right to read pg_control_system()
            return (f"the system identifier of {self.target.name} could not be read ({type(exc).__name__}), so the "
                    "stanza cannot be checked to be its: try again once the target answers")
        if info.system_id != system_id:
            return (f"stanza {info.name} backs up another server (db-system-id {info.system_id}, "
                    f"{self.target.name}'s system identifier is {system_id})")
        return ""

    def clean_database(self) -> str:
        database = self.cleaned_data["database"]
        if database:
            validate_pg_name(database)
        return database

    def clean(self):
        cleaned = super().clean()
        if self.target is not None and self.target.role in (Target.Role.SCRATCH, Target.Role.PGBOUNCER):
            raise ValidationError(f"{self.target.name} is a {self.target.get_role_display()} target: physical backups "
                                  "are of a primary (or of a replica, with its primary's stanza)")
        if not self.errors:
            refused = self._refused_stanza(cleaned)
            if refused:
                raise ValidationError(refused)
        return cleaned

    def save(self, commit=True):
        policy = super().save(commit=False)
        policy.target = self.target
        if commit:
            policy.save()
        return policy
