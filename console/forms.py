from django import forms
from django.core.exceptions import ValidationError

from console.models import Job, Target
from console.validators import validate_tags


class TargetForm(forms.ModelForm):
    password = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted. Leave empty to keep the current one.",
    )
    tags_text = forms.CharField(label="Tags", required=False, help_text="Comma separated.")
    save_unreachable = forms.BooleanField(
        label="Save even if the connection test fails", required=False
    )

    class Meta:
        model = Target
        fields = [
            "name", "role", "upstream", "host", "port", "dbname", "username", "password_env",
            "pool_size", "max_overflow", "pool_timeout_s", "pool_recycle_s", "connect_timeout_s",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tags_text"].initial = ", ".join(self.instance.tags or [])
        upstream = Target.objects.filter(role=Target.Role.PRIMARY)
        if self.instance.pk:
            upstream = upstream.exclude(pk=self.instance.pk)
        self.fields["upstream"].queryset = upstream
        self.fields["port"].widget.attrs.update(min=1, max=65535)

    def clean_port(self):
        port = self.cleaned_data["port"]
        if not 1 <= port <= 65535:
            raise ValidationError("A port is between 1 and 65535.")
        return port

    def clean_tags_text(self):
        tags = [t.strip() for t in self.cleaned_data["tags_text"].split(",") if t.strip()]
        validate_tags(tags)
        return tags

    def clean_pool_size(self):
        size = self.cleaned_data["pool_size"]
        if not 1 <= size <= 100:
            raise ValidationError("Pool size is between 1 and 100.")
        return size

    def clean(self):
        data = super().clean()
        role, upstream = data.get("role"), data.get("upstream")
        if role in (Target.Role.REPLICA, Target.Role.PGBOUNCER) and not upstream:
            self.add_error("upstream", "A replica or PgBouncer needs the primary it follows or fronts.")
        if role in (Target.Role.PRIMARY, Target.Role.SCRATCH) and upstream:
            self.add_error("upstream", "Only replicas and PgBouncers have an upstream.")
        if data.get("password") and data.get("password_env"):
            self.add_error("password", "Give a password or an environment variable, not both.")
        return data

    def save(self, commit=True):
        target = super().save(commit=False)
        target.tags = self.cleaned_data["tags_text"]
        if self.cleaned_data.get("password"):
            target.set_password(self.cleaned_data["password"])
            target.password_env = ""
        elif self.cleaned_data.get("password_env"):
            target.password_encrypted = ""
        if commit:
            target.save()
        return target


class AuditFilterForm(forms.Form):
    actor = forms.CharField(required=False)
    action = forms.CharField(required=False)
    outcome = forms.ChoiceField(
        required=False, choices=[("", "any outcome"), ("ok", "ok"), ("denied", "denied"), ("failed", "failed")]
    )
    object_type = forms.CharField(required=False, label="Object")
    since = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    until = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))

    LOOKUPS = {"actor": "actor_username__icontains", "action": "action__icontains", "outcome": "outcome",
               "object_type": "object_type__icontains", "since": "created_at__gte", "until": "created_at__lte"}

    def filter(self, events):
        return _filtered(self, events)


class JobFilterForm(forms.Form):
    kind = forms.CharField(required=False)
    state = forms.ChoiceField(required=False, choices=[("", "any state"), *Job.State.choices])

    LOOKUPS = {"kind": "kind__icontains", "state": "state"}

    def filter(self, jobs):
        return _filtered(self, jobs)


def _filtered(form, queryset):
    """The queryset narrowed by every filled-in field of a filter form (LOOKUPS: field -> lookup)."""
    if not form.is_valid():
        return queryset
    chosen = {lookup: form.cleaned_data[field] for field, lookup in form.LOOKUPS.items() if form.cleaned_data[field]}
    return queryset.filter(**chosen)
