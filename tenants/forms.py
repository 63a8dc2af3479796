import csv
import io
from itertools import zip_longest

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from console.models import Target
from console.validators import validate_display_name
from tenants.models import Tenant, validate_tenant_slug
from tenants.onboarding import TenantSpec

HEADER = ("slug", "name", "strategy")
MAX_CELL_CHARS = 200  # Tenant.name's max_length; slugs and strategies are shorter still
MAX_ROW_BYTES = 1024  # a row of three cells within MAX_CELL_CHARS, with room to spare


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
        if data["drift"]:  # an archived tenant's last figures describe nothing that exists
            tenants = tenants.exclude(state=Tenant.State.ARCHIVED)
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
    name = forms.CharField(required=False, max_length=MAX_CELL_CHARS, validators=[validate_display_name],
                           help_text=f"{MAX_CELL_CHARS} characters at most, no control characters.")
    bulk = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 5, "placeholder": "acme,Acme Inc\nglobex,Globex,shared"}),
                           label="Several tenants", help_text="One per line: slug,name[,strategy].")
    csv_file = forms.FileField(required=False, label="…or a CSV file")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["csv_file"].help_text = (
            f"UTF-8, columns slug,name[,strategy]; a header line slug,name[,strategy] is allowed; "
            f"{settings.TENANT_CSV_MAX_ROWS:,} tenants at most.")

    def clean_slug(self):
        slug = self.cleaned_data["slug"].strip()
        if slug:
            validate_tenant_slug(slug)
        return slug

    def clean_csv_file(self):
        upload = self.cleaned_data["csv_file"]
        if not upload:
            return ""
        max_bytes = settings.TENANT_CSV_MAX_ROWS * MAX_ROW_BYTES
        if upload.size > max_bytes:
            raise ValidationError(f"The CSV file is larger than {max_bytes // 1024:,} KB: "
                                  f"{settings.TENANT_CSV_MAX_ROWS:,} tenants at most.")
        try:
            return upload.read().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ValidationError("The CSV file is not UTF-8 text.") from None

    def clean(self):
        data = super().clean()
        default_strategy = data.get("strategy") or Tenant.Strategy.SCHEMA
        specs = []
        for field in ("bulk", "csv_file"):
            try:
                specs += parse_csv(data.get(field) or "", default_strategy)
            except ValidationError as exc:
                self.add_error(field, exc)
        if data.get("slug"):
            specs.insert(0, TenantSpec(data["slug"], data.get("name") or data["slug"], data.get("strategy") or Tenant.Strategy.SCHEMA))
        if not specs and not self.errors:
            raise ValidationError("Give a slug, or several tenants as lines or a CSV file.")
        if len(specs) > settings.TENANT_CSV_MAX_ROWS:
            raise ValidationError(f"At most {settings.TENANT_CSV_MAX_ROWS:,} tenants at once (TENANT_CSV_MAX_ROWS).")
        data["specs"] = specs
        return data


def parse_lines(lines, default_strategy: str) -> list[TenantSpec]:
    return parse_csv("\n".join(lines), default_strategy)


def parse_csv(text: str, default_strategy: str) -> list[TenantSpec]:
    """Rows of `slug,name[,strategy]`, after an optional header row naming those columns; blank
    lines and `#` comments are skipped. Anything else unusual is refused with its line number."""
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise ValidationError(f"line {line}: a NUL byte. Is this a text file? Save it as UTF-8 CSV.")
    max_rows = settings.TENANT_CSV_MAX_ROWS
    strategies = set(Tenant.Strategy.values)
    columns, first, specs = len(HEADER), True, []
    for line, row in _csv_rows(text):
        cells = [cell.strip() for cell in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        is_header, first = first and cells[0].lower() == HEADER[0], False
        if is_header:
            columns = _header_columns(line, cells)
            continue
        if len(cells) > columns:
            raise ValidationError(f"line {line}: {len(cells)} columns, expected at most {columns} ({','.join(HEADER[:columns])}).")
        if any(len(cell) > MAX_CELL_CHARS for cell in cells):
            raise ValidationError(f"line {line}: a field is longer than {MAX_CELL_CHARS} characters.")
        if len(specs) == max_rows:
            raise ValidationError(f"line {line}: more than {max_rows:,} tenants (TENANT_CSV_MAX_ROWS); split the file.")
        slug, name, strategy = (cells + ["", ""])[:3]
        try:
            validate_display_name(name)
        except ValidationError as exc:
            raise ValidationError(f"line {line}: {exc.messages[0]}") from None
        strategy = strategy or default_strategy
        if strategy not in strategies:
            raise ValidationError(f"line {line}: strategy must be one of {', '.join(sorted(strategies))}")
        specs.append(TenantSpec(slug, name or slug, strategy))
    return specs


def _csv_rows(text: str):
    """(first line number, cells) of each row; a row may span lines inside quotes."""
    reader = csv.reader(io.StringIO(text, newline=None), strict=True)
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ValidationError(f"line {line}: {_csv_problem(exc)}") from None
        yield line, row


def _csv_problem(exc: csv.Error) -> str:
    problem = str(exc)
    if problem == "unexpected end of data":
        return "a quote is opened and never closed."
    if problem.startswith("field larger than field limit"):
        return f"a field is longer than {MAX_CELL_CHARS} characters."
    return f"not readable as CSV ({problem})."


def _header_columns(line: int, cells: list[str]) -> int:
    names = tuple(cell.lower() for cell in cells)
    if names in (HEADER[:2], HEADER):
        return len(names)
    wrong = [cell for cell, name in zip_longest(cells, HEADER) if cell is not None and cell.lower() != name]
    problem = f"unknown header {wrong[0][:40]!r}" if wrong else "incomplete header"
    raise ValidationError(f"line {line}: {problem}; the header row is slug,name[,strategy].")


class MigrateForm(forms.Form):
    target = forms.ModelChoiceField(queryset=tenant_targets(), empty_label="choose a target")
