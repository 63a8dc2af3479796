from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from console.models import Target
from console.pg import ddl
from console.pg.backfill import INTEGER_TYPES, BackfillRefused, parse_expression
from console.validators import validate_pg_name
from migrations_ui import staging
from migrations_ui.models import Change

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


class ChangeForm(forms.Form):
    """A console-authored change on one table, its names picked from the target's catalog
    (`tables`, read by the view); everything is checked against that catalog and PostgreSQL's
    parser before anything is saved."""

    target = forms.ModelChoiceField(queryset=Target.objects.filter(role=Target.Role.PRIMARY).order_by("name"),
                                    help_text="A primary: the change runs there.")
    database = forms.CharField(required=False, max_length=63, validators=[validate_pg_name],
                               help_text="Empty: the target's own database.")
    kind = forms.ChoiceField(choices=Change.Kind.choices, initial=Change.Kind.ADD_NOT_NULL_COLUMN)
    table = forms.CharField(max_length=130, widget=forms.Select)
    column = forms.CharField(required=False, max_length=63, widget=forms.Select,
                             help_text="The existing column (NOT NULL, foreign key).")
    new_column = forms.CharField(label="New column", required=False, max_length=63,
                                 help_text="Add a NOT NULL column: its name.")
    column_type = forms.CharField(label="Type", required=False, max_length=100,
                                  help_text="Add a NOT NULL column: e.g. bigint, text, boolean, numeric(10,2).")
    backfill_expression = _expression_field(
        "Backfill expression", "The value for existing rows (NOT NULL kinds), one SQL expression over the row, "
        "e.g. 0 or coalesce(abalance, 0) > 0.", required=False)
    ref_table = forms.CharField(label="Referenced table", required=False, max_length=130, widget=forms.Select)
    ref_column = forms.CharField(label="Referenced column", required=False, max_length=63, widget=forms.Select)
    index_columns = forms.MultipleChoiceField(label="Index columns", required=False,
                                              help_text="Add an index: its columns, in order of the list.")

    PICKERS = ("table", "column", "new_column", "column_type", "backfill_expression", "ref_table", "ref_column",
               "index_columns")  # the fields the chosen target's catalog fills (reloaded by htmx)

    def __init__(self, *args, tables: list | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.tables = {t.qualified: t for t in tables or []}
        self.fields["table"].widget.choices = [("", "—")] + [(name, name) for name in self.tables]
        self.fields["ref_table"].widget.choices = self.fields["table"].widget.choices
        columns = self._columns_of(self["table"].value())
        self.fields["column"].widget.choices = [("", "—")] + [(c.name, f"{c.name} ({c.type})") for c in columns]
        self.fields["index_columns"].choices = [(c.name, f"{c.name} ({c.type})") for c in columns]
        referenced = self._columns_of(self["ref_table"].value())
        self.fields["ref_column"].widget.choices = [("", "—")] + [(c.name, f"{c.name} ({c.type})") for c in referenced]

    KIND_PICKERS = {
        Change.Kind.ADD_NOT_NULL_COLUMN: ("table", "new_column", "column_type", "backfill_expression"),
        Change.Kind.SET_NOT_NULL: ("table", "column", "backfill_expression"),
        Change.Kind.ADD_FOREIGN_KEY: ("table", "column", "ref_table", "ref_column"),
        Change.Kind.ADD_INDEX: ("table", "index_columns"),
    }

    def shown_pickers(self) -> list:
        """The pickers the chosen kind uses (all of them before one is chosen)."""
        names = self.KIND_PICKERS.get(self["kind"].value() or "", self.PICKERS)
        return [self[name] for name in self.PICKERS if name in names]

    def _columns_of(self, qualified) -> list:
        table = self.tables.get(qualified or "")
        return table.columns if table else []

    def _table(self, field: str):
        name = self.cleaned_data.get(field) or ""
        table = self.tables.get(name)
        if table is None:
            where = self.cleaned_data.get("target")
            self.add_error(field, f"There is no table {name or '(none chosen)'} in this database"
                                  + (f" of {where.name}" if where else "") + ": pick one from the list.")
        return table

    def _existing_column(self, table, field: str):
        name = self.cleaned_data.get(field) or ""
        column = table.column(name)
        if column is None:
            self.add_error(field, f"{table.qualified} has no column {name or '(none chosen)'}.")
        return column

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        table = self._table("table")
        if table is None:
            return data
        kind = data["kind"]
        data["schema"], data["table_name"] = table.schema, table.name
        if kind == Change.Kind.ADD_NOT_NULL_COLUMN:
            self._clean_new_column(table, data)
        elif kind == Change.Kind.SET_NOT_NULL:
            column = self._existing_column(table, "column")
            if column is not None and column.not_null:
                self.add_error("column", f"{table.qualified}.{column.name} is already NOT NULL.")
        elif kind == Change.Kind.ADD_FOREIGN_KEY:
            self._clean_foreign_key(table, data)
        else:
            if not data.get("index_columns"):
                self.add_error("index_columns", "Pick the index's columns.")
        if kind in (Change.Kind.ADD_NOT_NULL_COLUMN, Change.Kind.SET_NOT_NULL):
            self._clean_backfill(table, data)
        return data

    def _clean_new_column(self, table, data):
        name = data.get("new_column") or ""
        try:
            validate_pg_name(name)
        except ValidationError as exc:
            self.add_error("new_column", f"The new column's name {name!r}: {' '.join(exc.messages)}")
        else:
            if table.column(name):
                self.add_error("new_column", f"{table.qualified} already has a column {name}.")
        try:
            data["column_type"] = ddl.column_type_sql(data.get("column_type") or "")
        except ddl.DdlRefused as exc:
            self.add_error("column_type", str(exc).removeprefix("add_column_nullable: "))

    def _clean_foreign_key(self, table, data):
        self._existing_column(table, "column")
        referenced = self._table("ref_table")
        if referenced is not None:
            column = self._existing_column(referenced, "ref_column")
            if column is not None and not column.primary_key:
                self.add_error("ref_column", f"{referenced.qualified}.{column.name} is not its table's primary key: "
                                             "a foreign key needs a primary key or unique constraint to point at.")

    def _clean_backfill(self, table, data):
        if len(table.primary_key) != 1:
            self.add_error("table", f"{table.qualified} has no single-column primary key for the backfill to batch over.")
            return
        pk = table.column(table.primary_key[0])
        if pk.type not in INTEGER_TYPES:
            self.add_error("table", f"{table.qualified}'s primary key {pk.name} is {pk.type}: the backfill needs an "
                                    "integer key (smallint, integer or bigint).")
            return
        data["pk_column"] = pk.name
        try:
            data["backfill_expression"] = staging.not_null_backfill(data.get("backfill_expression") or "")
        except BackfillRefused as exc:
            self.add_error("backfill_expression", str(exc))

    def change_fields(self) -> dict:
        """The Change's fields, once valid."""
        data, kind = self.cleaned_data, self.cleaned_data["kind"]
        fields = {"target": data["target"], "database": data.get("database") or "", "kind": kind,
                  "schema": data["schema"], "table": data["table_name"]}
        if kind == Change.Kind.ADD_NOT_NULL_COLUMN:
            fields.update(column=data["new_column"], column_type=data["column_type"])
        elif kind != Change.Kind.ADD_INDEX:
            fields.update(column=data["column"])
        if kind in (Change.Kind.ADD_NOT_NULL_COLUMN, Change.Kind.SET_NOT_NULL):
            fields.update(backfill_expression=data["backfill_expression"], pk_column=data["pk_column"])
        if kind == Change.Kind.ADD_FOREIGN_KEY:
            referenced = self.tables[data["ref_table"]]
            fields.update(ref_schema=referenced.schema, ref_table=referenced.name, ref_column=data["ref_column"])
        if kind == Change.Kind.ADD_INDEX:
            fields.update(index_columns=list(data["index_columns"]))
        return fields
