from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db.models import Q

from console.models import Job, Target
from console.validators import validate_tags


def _password_field(label: str) -> forms.CharField:
    return forms.CharField(
        label=label,
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted. Leave empty to keep the current one.",
    )


class TargetForm(forms.ModelForm):
    password = _password_field("Monitor password")
    change_password = _password_field("Change password")
    tags_text = forms.CharField(label="Tags", required=False, help_text="Comma separated.")
    save_unreachable = forms.BooleanField(
        label="Save even if the connection test fails", required=False
    )

    field_order = [
        "name", "role", "upstream", "host", "port", "dbname", "username", "password_env", "password",
        "change_username", "change_password_env", "change_password",
    ]

    class Meta:
        model = Target
        fields = [
            "name", "role", "upstream", "host", "port", "dbname", "username", "password_env",
            "change_username", "change_password_env", "pool_size", "max_overflow", "pool_timeout_s",
            "pool_recycle_s", "connect_timeout_s", "heartbeat_enabled",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tags_text"].initial = ", ".join(self.instance.tags or [])
        upstream = Target.objects.filter(role=Target.Role.PRIMARY)
        if self.instance.pk:
            upstream = upstream.exclude(pk=self.instance.pk)
        self.fields["upstream"].queryset = upstream
        self.fields["port"].widget.attrs.update(min=1, max=65535)
        for name in BOUNDED_FIELDS:
            low, high = _bounds(name)
            field = self.fields[name]
            field.widget.attrs.update(min=low, max=high)
            field.help_text = " ".join(filter(None, [str(field.help_text), f"Between {low:g} and {high:g}."]))

    def clean_port(self):
        port = self.cleaned_data["port"]
        if not 1 <= port <= 65535:
            raise ValidationError("A port is between 1 and 65535.")
        return port

    def clean_tags_text(self):
        tags = [t.strip() for t in self.cleaned_data["tags_text"].split(",") if t.strip()]
        validate_tags(tags)
        return tags

    def clean(self):
        data = super().clean()
        role, upstream = data.get("role"), data.get("upstream")
        if role in (Target.Role.REPLICA, Target.Role.PGBOUNCER) and not upstream:
            self.add_error("upstream", "A replica or PgBouncer needs the primary it follows or fronts.")
        if role in (Target.Role.PRIMARY, Target.Role.SCRATCH) and upstream:
            self.add_error("upstream", "Only replicas and PgBouncers have an upstream.")
        for prefix in ("", "change_"):
            if data.get(f"{prefix}password") and data.get(f"{prefix}password_env"):
                self.add_error(f"{prefix}password", "Give a password or an environment variable, not both.")
        if (data.get("change_password") or data.get("change_password_env")) and not data.get("change_username"):
            self.add_error("change_username", "A change password needs its user.")
        if data.get("change_username") and data.get("change_username") == data.get("username"):
            self.add_error("change_username", "Use another role than the monitor user: the monitor role must not own schemas.")
        if data.get("heartbeat_enabled") and role != Target.Role.PRIMARY:
            self.add_error("heartbeat_enabled", "Only a primary writes the heartbeat its standbys read.")
        return data

    def save(self, commit=True):
        target = super().save(commit=False)
        target.tags = self.cleaned_data["tags_text"]
        for prefix, credential in (("", "monitor"), ("change_", "change")):
            if self.cleaned_data.get(f"{prefix}password"):
                target.set_password(self.cleaned_data[f"{prefix}password"], credential)
                setattr(target, f"{prefix}password_env", "")
            elif self.cleaned_data.get(f"{prefix}password_env"):
                setattr(target, f"{prefix}password_encrypted", "")
        if not target.change_username:
            target.change_password_env = target.change_password_encrypted = ""
        if commit:
            target.save()
        return target


BOUNDED_FIELDS = ("pool_size", "max_overflow", "pool_timeout_s", "pool_recycle_s", "connect_timeout_s")


def _bounds(name: str) -> tuple[float, float]:
    """The limits of a Target number field, from its model validators (rendered as min/max too)."""
    validators = Target._meta.get_field(name).validators
    low = next(v.limit_value for v in validators if isinstance(v, MinValueValidator))
    high = next(v.limit_value for v in validators if isinstance(v, MaxValueValidator))
    return low, high


class AuditFilterForm(forms.Form):
    actor = forms.CharField(required=False)
    action = forms.CharField(required=False)
    outcome = forms.ChoiceField(
        required=False, choices=[("", "any outcome"), ("ok", "ok"), ("denied", "denied"), ("failed", "failed")]
    )
    object_type = forms.CharField(required=False, label="Object type")
    object_name = forms.CharField(required=False, label="Object name")
    since = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    until = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))

    LOOKUPS = {"actor": "actor_username__icontains", "action": "action__icontains", "outcome": "outcome",
               "object_type": "object_type__icontains", "since": "created_at__gte", "until": "created_at__lte"}

    def filter(self, events):
        events = _filtered(self, events)
        name = self.cleaned_data.get("object_name") if self.is_valid() else ""
        if name:
            # An onboarding is audited against its job and names its tenants in detail["tenants"];
            # an approval's events name their object in detail["object"].
            events = events.filter(Q(object_repr__icontains=name) | Q(detail__tenants__icontains=name)
                                   | Q(detail__object__icontains=name))
        return events


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
