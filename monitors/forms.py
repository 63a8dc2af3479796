from django import forms
from django.conf import settings

# The highest threshold each alert takes: percentages stop at 100, the others at a value far
# beyond any alert worth having (an hour, a week, 10 TB), so a typo cannot switch an alert off.
THRESHOLD_MAX = {
    "pool_utilisation_pct": 100.0,
    "checkout_wait_ms": 3_600_000.0,
    "overflow_pct": 100.0,
    "failed_checkouts_per_min": 100_000.0,
    "connections_pct": 100.0,
    "replica_lag_s": 604_800.0,
    "replica_lag_bytes": 1e13,
    "long_running_query_s": 604_800.0,
    "xid_wraparound_pct": 100.0,
    "sequence_used_pct": 100.0,
}


class ThresholdForm(forms.Form):
    metric = forms.ChoiceField(choices=[(m, m) for m in settings.ALERT_DEFAULTS])
    warning = forms.FloatField(min_value=0, required=False)
    critical = forms.FloatField(min_value=0, required=False)
    reset = forms.BooleanField(required=False)

    @staticmethod
    def bounds() -> list[tuple[str, float]]:
        """(metric, highest threshold) for the page to show next to each input."""
        return [(metric, THRESHOLD_MAX[metric]) for metric in settings.ALERT_DEFAULTS]

    def clean(self):
        data = super().clean()
        if data.get("reset") or "metric" not in data:
            return data
        warning, critical = data.get("warning"), data.get("critical")
        if warning is None or critical is None:
            if not self.errors:
                raise forms.ValidationError("Give both a warning and a critical threshold.")
            return data
        highest = THRESHOLD_MAX[data["metric"]]
        for name, value in (("warning", warning), ("critical", critical)):
            if value > highest:
                self.add_error(name, f"At most {highest:,.0f} for this alert (from 0 to {highest:,.0f}).")
        if not self.errors and warning >= critical:
            raise forms.ValidationError("The warning threshold must be below the critical one.")
        return data
