from django import forms
from django.conf import settings


class ThresholdForm(forms.Form):
    metric = forms.ChoiceField(choices=[(m, m) for m in settings.ALERT_DEFAULTS])
    warning = forms.FloatField(min_value=0, required=False)
    critical = forms.FloatField(min_value=0, required=False)
    reset = forms.BooleanField(required=False)

    def clean(self):
        data = super().clean()
        if data.get("reset"):
            return data
        warning, critical = data.get("warning"), data.get("critical")
        if warning is None or critical is None:
            raise forms.ValidationError("Give both a warning and a critical threshold.")
        if warning > critical:
            raise forms.ValidationError("The warning threshold must not be above the critical one.")
        return data
