"""The backup policy form (operators): schedule, retention, destination, scratch server, smoke
queries and the ages past which an alert opens."""

from pathlib import Path

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator

from console.models import Target
from console.validators import validate_pg_name
from monitors.drills.models import BackupPolicy
from console import engines
from console.pg.backup import volatile_functions
from monitors.drills.restores import smoke_query_calls
from tenants.models import Tenant

HOURS_MAX = 24 * 366
KEEP_COUNT_MAX = 10_000
KEEP_DAYS_MAX = 3660  # ten years


class PolicyForm(forms.ModelForm):
    smoke_queries = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One SELECT per line, run on the restored copy; each must return at least one row.")

    class Meta:
        model = BackupPolicy
        fields = ["tenant", "target", "database", "every_hours", "cron", "keep_count", "keep_days", "destination", "scratch",
                  "smoke_queries", "backup_max_age_h", "drill_max_age_h"]
        labels = {
            "tenant": "Tenant (or none: a whole database)",
            "every_hours": "Every N hours", "cron": "Or a cron expression (UTC)", "keep_count": "Keep the last N backups",
            "keep_days": "Keep the backups of the last N days", "destination": "Destination directory",
            "scratch": "Scratch server", "backup_max_age_h": "Alert without a backup for (hours)",
            "drill_max_age_h": "Alert without a verified backup for (hours)",
        }
        help_texts = {
            "tenant": "A tenant's backups: its database, its schema, or its rows of the shared schema. "
                      "Target and database are then the tenant's.",
            "cron": "minute hour day-of-month month day-of-week, e.g. 0 3 * * *",
            "keep_count": "Empty with the next one empty too: keep all. The newest verified backup is never removed.",
            "destination": "Empty: the BACKUP_DIR setting. An absolute path on the workers.",
            "scratch": "Empty: the first target of role scratch.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["target"].queryset = Target.objects.exclude(
            role__in=[Target.Role.SCRATCH, Target.Role.PGBOUNCER]).order_by("name")
        self.fields["scratch"].queryset = Target.objects.filter(role=Target.Role.SCRATCH).order_by("name")
        self.fields["tenant"].queryset = Tenant.objects.filter(state=Tenant.State.ACTIVE).select_related("target")
        self.fields["target"].required = self.fields["database"].required = False  # a tenant's are its own
        # Validators, not min_value/max_value: a field builds its validators when it is made.
        bounds = {"every_hours": HOURS_MAX, "backup_max_age_h": HOURS_MAX, "drill_max_age_h": HOURS_MAX,
                  "keep_count": KEEP_COUNT_MAX, "keep_days": KEEP_DAYS_MAX}
        for name, maximum in bounds.items():
            self.fields[name].validators += [MinValueValidator(1), MaxValueValidator(maximum)]
            self.fields[name].widget.attrs.update(min=1, max=maximum)
        if self.instance.pk:
            self.initial["smoke_queries"] = "\n".join(self.instance.smoke_queries)
            for name in ("tenant", "target", "database"):
                self.fields[name].disabled = True

    def clean_database(self):
        database = self.cleaned_data["database"]
        if database:
            validate_pg_name(database)
        return database

    def clean_destination(self):
        destination = self.cleaned_data["destination"].strip()
        if not destination:
            return destination
        path = Path(destination)
        roots = [Path(root).resolve() for root in settings.BACKUP_ROOTS]
        if not path.is_absolute() or ".." in path.parts:
            raise ValidationError(f"an absolute path without '..', under {', '.join(map(str, roots))}")
        if not any(path.resolve() == root or path.resolve().is_relative_to(root) for root in roots):
            raise ValidationError(f"backups hold a whole database: the destination must lie under "
                                  f"{' or '.join(map(str, roots))} (the BACKUP_ROOTS setting)")
        return str(path.resolve())

    def clean_smoke_queries(self):
        queries = [line.strip() for line in self.cleaned_data["smoke_queries"].splitlines() if line.strip()]
        self._smoke_calls = set()
        for number, query in enumerate(queries, 1):
            try:
                self._smoke_calls |= smoke_query_calls(query)
            except ValueError as exc:
                raise ValidationError(f"line {number}: {exc}") from exc
        return queries

    def _refuse_volatile_smoke_calls(self, target, database) -> None:
        """Told now, from the source's catalog, what the drill would refuse on the restored copy;
        a source that cannot be read now leaves it to the drill."""
        try:
            with engines.connect(target, database=database, rollback=True) as conn:
                volatile = volatile_functions(conn, getattr(self, "_smoke_calls", set()))
        except Exception:
            return
        if volatile:
            self.add_error("smoke_queries", f"calls {', '.join(volatile)}, which can do more than read: "
                                            "a smoke query calls only immutable or stable functions")

    def clean(self):
        data = super().clean()
        tenant = data.get("tenant")
        if tenant is not None:
            data["target"], data["database"] = tenant.target, tenant.database_name or tenant.target.dbname
        elif not self.errors and not (data.get("target") and data.get("database")):
            raise ValidationError("Choose a tenant, or a target and one of its databases.")
        if data.get("every_hours") and data.get("cron"):
            raise ValidationError("Choose every N hours or a cron expression, not both.")
        if data.get("target") and data.get("database") and data.get("smoke_queries"):
            self._refuse_volatile_smoke_calls(data["target"], data["database"])
        return data
