from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from console.models import Target
from console.pg.backfill import BackfillRefused, parse_expression
from console.validators import validate_pg_name

EXPRESSION_MAX_CHARS = 4000


def _expression_field(label: str, help_text: str, required: bool = True) -> forms.CharField:
    return forms.CharField(label=label, required=required, max_length=EXPRESSION_MAX_CHARS, help_text=help_text,
                           widget=forms.Textarea(attrs={"rows": 2, "class": "mono"}))


class BackfillForm(forms.Form):
    """Run a backfill: `UPDATE schema.table SET column = <SET> WHERE <WHERE>`, in keyset batches."""

    target = forms.ModelChoiceField(queryset=Target.objects.filter(role__in=[Target.Role.PRIMARY, Target.Role.PGBOUNCER]))
    database = forms.CharField(required=False, max_length=63, validators=[validate_pg_name],
                               help_text="Empty: the target's own database.")
    schema = forms.CharField(initial="public", max_length=63, validators=[validate_pg_name])
    table = forms.CharField(max_length=63, validators=[validate_pg_name],
                            help_text="Batched over its primary key, which must be one integer column.")
    set_column = forms.CharField(label="Column", max_length=63, validators=[validate_pg_name])
    set_expression = _expression_field("SET expression", "One SQL expression, e.g. coalesce(legacy_flag, false).")
    where = _expression_field("WHERE filter", "One SQL condition; empty: every row.", required=False)
    batch_target_ms = forms.IntegerField(label="Target time per batch (ms)", min_value=10, max_value=10000)
    max_replica_lag_s = forms.FloatField(label="Throttle above replica lag (s)", min_value=0.1, max_value=3600)
    max_lock_waiters = forms.IntegerField(label="Throttle above lock waiters", min_value=0, max_value=1000)
    throttle_retry_s = forms.FloatField(label="Look again after (s)", min_value=0.5, max_value=3600,
                                        help_text="A throttled backfill waits this long without holding a worker.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["batch_target_ms"].initial = settings.BACKFILL_BATCH_TARGET_MS
        self.fields["max_replica_lag_s"].initial = settings.BACKFILL_MAX_REPLICA_LAG_S
        self.fields["max_lock_waiters"].initial = settings.BACKFILL_MAX_LOCK_WAITERS
        self.fields["throttle_retry_s"].initial = settings.BACKFILL_THROTTLE_RETRY_S

    def _expression(self, name: str, what: str) -> str:
        value = self.cleaned_data.get(name) or ""
        if not value.strip():
            return ""
        try:
            parse_expression(value, what)
        except BackfillRefused as exc:
            raise ValidationError(str(exc)) from None
        return value

    def clean_set_expression(self):
        return self._expression("set_expression", "SET expression")

    def clean_where(self):
        return self._expression("where", "WHERE filter")
