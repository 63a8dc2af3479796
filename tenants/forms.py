import csv
import io

from django import forms
from django.core.exceptions import ValidationError

from console.models import Target
from tenants.models import Tenant, validate_tenant_slug
from tenants.services import TenantSpec

MAX_BULK_TENANTS = 1000


def tenant_targets():
    return Target.objects.filter(role__in=[Target.Role.PRIMARY, Target.Role.PGBOUNCER])


class TenantFilterForm(forms.Form):
    target = forms.ModelChoiceField(queryset=Target.objects.all(), required=False, empty_label="any target")
    strategy = forms.ChoiceField(choices=[("", "any strategy"), *Tenant.Strategy.choices], required=False)
    state = forms.ChoiceField(choices=[("", "any state"), *Tenant.State.choices], required=False)
    drift = forms.ChoiceField(
        choices=[("", "drift: any"), ("yes", "drifting"), ("no", "no drift"), ("unknown", "never measured")],
        required=False,
    )

    def filter(self, tenants):
        if not self.is_valid():
            return tenants
        data = self.cleaned_data
        if data["target"]:
            tenants = tenants.filter(target=data["target"])
        if data["strategy"]:
            tenants = tenants.filter(strategy=data["strategy"])
        if data["state"]:
            tenants = tenants.filter(state=data["state"])
        if data["drift"] == "yes":
            tenants = tenants.filter(last_health__ok=True, last_health__drift_count__gt=0)
        elif data["drift"] == "no":
            tenants = tenants.filter(last_health__ok=True, last_health__drift_count=0)
        elif data["drift"] == "unknown":
            tenants = tenants.filter(last_health__isnull=True)
        return tenants


class OnboardForm(forms.Form):
    """One tenant, or many: lines of `slug,name[,strategy]` typed in or uploaded as a CSV file."""

    target = forms.ModelChoiceField(queryset=tenant_targets())
    strategy = forms.ChoiceField(choices=Tenant.Strategy.choices, initial=Tenant.Strategy.SCHEMA,
                                 help_text="For lines that do not name one.")
    slug = forms.CharField(required=False, max_length=200, help_text="Lowercase letters, digits, underscores; 40 at most.")
    name = forms.CharField(required=False, max_length=200)
    bulk = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 5, "placeholder": "acme,Acme Inc\nglobex,Globex,shared"}),
                           label="Several tenants", help_text="One per line: slug,name[,strategy].")
    csv_file = forms.FileField(required=False, label="…or a CSV file",
                               help_text="Columns slug,name[,strategy]; a header line is allowed.")

    def clean_slug(self):
        slug = self.cleaned_data["slug"].strip()
        if slug:
            validate_tenant_slug(slug)
        return slug

    def clean(self):
        data = super().clean()
        default_strategy = data.get("strategy") or Tenant.Strategy.SCHEMA
        specs = parse_lines((data.get("bulk") or "").splitlines(), default_strategy)
        if data.get("csv_file"):
            try:
                lines = data["csv_file"].read().decode("utf-8-sig").splitlines()
            except UnicodeDecodeError:
                raise ValidationError("The CSV file is not UTF-8 text.") from None
            specs += parse_lines(lines, default_strategy)
        if data.get("slug"):
            specs.insert(0, TenantSpec(data["slug"], data.get("name") or data["slug"], data.get("strategy") or Tenant.Strategy.SCHEMA))
        if not specs and not self.errors:
            raise ValidationError("Give a slug, or several tenants as lines or a CSV file.")
        if len(specs) > MAX_BULK_TENANTS:
            raise ValidationError(f"At most {MAX_BULK_TENANTS} tenants at once.")
        data["specs"] = specs
        return data


def parse_lines(lines, default_strategy: str) -> list[TenantSpec]:
    specs = []
    strategies = set(Tenant.Strategy.values)
    for number, row in enumerate(csv.reader(io.StringIO("\n".join(lines))), start=1):
        cells = [cell.strip() for cell in row]
        if not any(cells) or cells[0].startswith("#") or (cells[0].lower() == "slug" and number == 1):
            continue
        slug, name, strategy = (cells + ["", ""])[:3]
        strategy = strategy or default_strategy
        if strategy not in strategies:
            raise ValidationError(f"line {number}: strategy must be one of {', '.join(sorted(strategies))}")
        specs.append(TenantSpec(slug, name or slug, strategy))
    return specs


class MigrateForm(forms.Form):
    target = forms.ModelChoiceField(queryset=tenant_targets(), empty_label="choose a target")
