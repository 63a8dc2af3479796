import hashlib
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.urls import reverse
from psycopg import sql

from console.pg import ddl
from console.pg.backfill import Spec
from console.validators import validate_pg_name


class Backfill(models.Model):
    """One backfill of a column on a target: what to set, where, how gently, and how far it got.
    The job (`migrations.backfill`) does the work; its state, rate and throttle reason are the
    job's own. `key` names its progress row on the target (console/pg/backfill.py)."""

    target = models.ForeignKey("console.Target", on_delete=models.PROTECT, related_name="backfills")
    database = models.CharField(max_length=63, blank=True, validators=[validate_pg_name],
                                help_text="Empty: the target's own database.")
    schema = models.CharField(max_length=63, default="public", validators=[validate_pg_name])
    table = models.CharField(max_length=63, validators=[validate_pg_name])
    pk_column = models.CharField(max_length=63, validators=[validate_pg_name])
    set_column = models.CharField(max_length=63, validators=[validate_pg_name])
    set_expression = models.TextField(help_text="As PostgreSQL's parser read it (pglast's deparse).")
    where = models.TextField(blank=True, help_text="As PostgreSQL's parser read it; empty: every row.")
    batch_target_ms = models.PositiveIntegerField(validators=[MinValueValidator(10), MaxValueValidator(10000)])
    max_replica_lag_s = models.FloatField(validators=[MinValueValidator(0.1), MaxValueValidator(3600)])
    max_lock_waiters = models.PositiveIntegerField(validators=[MaxValueValidator(1000)])
    throttle_retry_s = models.FloatField(validators=[MinValueValidator(0.5), MaxValueValidator(3600)])
    key = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    job = models.OneToOneField("console.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="backfill")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    # Progress, written with each batch's checkpoint.
    rows_total = models.BigIntegerField(null=True, blank=True)
    rows_done = models.BigIntegerField(default=0)
    batches = models.PositiveIntegerField(default=0)
    last_pk = models.BigIntegerField(null=True, blank=True)
    batch_size = models.PositiveIntegerField(null=True, blank=True)
    last_batch_ms = models.FloatField(null=True, blank=True)
    throttle_reason = models.TextField(blank=True, help_text="Why it last held off, if it ever did.")
    throttled_at = models.DateTimeField(null=True, blank=True)
    throttles = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.schema}.{self.table}.{self.set_column} on {self.target}"

    def get_absolute_url(self):
        return reverse("backfill-detail", args=[self.pk])

    def spec(self) -> Spec:
        return Spec(schema=self.schema, table=self.table, pk=self.pk_column, column=self.set_column,
                    set_sql=self.set_expression, where_sql=self.where, key=f"backfill-{self.key}")

    @property
    def percent(self) -> float | None:
        if not self.rows_total:
            return None
        return min(100.0, 100.0 * self.rows_done / self.rows_total)

    @property
    def is_live(self) -> bool:
        return self.job is not None and not self.job.is_finished

    @property
    def waiting_reason(self) -> str:
        """What the backfill waits for right now (the job's throttle), '' when it is not waiting."""
        job = self.job
        return job.wait_reason if job and job.state == job.State.QUEUED else ""


def derived_name(*parts: str, suffix: str) -> str:
    """A constraint or index name from its table and columns, at most 63 bytes (PostgreSQL's
    NAMEDATALEN - 1): cut, with a short hash of the whole, when longer."""
    whole = "_".join((*parts, suffix))
    if len(whole) <= 63:
        return whole
    return f"{whole[:54]}_{hashlib.sha1(whole.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class Stage:
    """One stage of a change: DDL operations (console/pg/ddl.py), or a batched backfill."""

    name: str  # expand, backfill, validate, contract
    ops: tuple[ddl.Op, ...] = ()
    backfill: Spec | None = None


class Change(models.Model):
    """A schema change written in the console for one table of a target's database, run as the
    lock-safe stages of DESIGN.md's staged migrations (`stages()`), each approved apart."""

    class Kind(models.TextChoices):
        ADD_NOT_NULL_COLUMN = "add_not_null_column", "Add a NOT NULL column"
        SET_NOT_NULL = "set_not_null", "Make an existing column NOT NULL"
        ADD_FOREIGN_KEY = "add_foreign_key", "Add a foreign key"
        ADD_INDEX = "add_index", "Add an index"

    STAGES = ("expand", "backfill", "validate", "contract")

    target = models.ForeignKey("console.Target", on_delete=models.PROTECT, related_name="changes")
    database = models.CharField(max_length=63, blank=True, validators=[validate_pg_name],
                                help_text="Empty: the target's own database.")
    schema = models.CharField(max_length=63, default="public", validators=[validate_pg_name])
    table = models.CharField(max_length=63, validators=[validate_pg_name])
    kind = models.CharField(max_length=32, choices=Kind.choices)
    column = models.CharField(max_length=63, blank=True, validators=[validate_pg_name])
    column_type = models.CharField(max_length=100, blank=True, help_text="As PostgreSQL's parser read it.")
    backfill_expression = models.TextField(blank=True, help_text="As PostgreSQL's parser read it (pglast's deparse).")
    pk_column = models.CharField(max_length=63, blank=True, validators=[validate_pg_name],
                                 help_text="The integer primary key the backfill's batches walk.")
    ref_schema = models.CharField(max_length=63, blank=True, validators=[validate_pg_name])
    ref_table = models.CharField(max_length=63, blank=True, validators=[validate_pg_name])
    ref_column = models.CharField(max_length=63, blank=True, validators=[validate_pg_name])
    index_columns = models.JSONField(default=list, blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    # An explicit override of the plan's unsafe findings: who, why, when.
    override_reason = models.TextField(blank=True)
    override_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    override_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.get_kind_display()} on {self.schema}.{self.table} ({self.target})"

    def get_absolute_url(self):
        return reverse("change-plan", args=[self.pk])

    @property
    def subject(self) -> str:
        if self.kind == self.Kind.ADD_INDEX:
            return ", ".join(self.index_columns)
        if self.kind == self.Kind.ADD_FOREIGN_KEY:
            return f"{self.column} → {self.ref_schema}.{self.ref_table}.{self.ref_column}"
        return self.column + (f" {self.column_type}" if self.column_type else "")

    @property
    def check_name(self) -> str:
        return derived_name(self.table, self.column, suffix="not_null")

    @property
    def index_name(self) -> str:
        columns = self.index_columns if self.kind == self.Kind.ADD_INDEX else [self.column]
        return derived_name(self.table, *columns, suffix="idx")

    @property
    def foreign_key_name(self) -> str:
        return derived_name("fk", self.table, self.column, suffix=self.ref_table)

    def _op(self, kind: str, **fields) -> ddl.Op:
        return ddl.Op(kind, self.schema, self.table, **fields)

    def backfill_spec(self) -> Spec:
        return Spec(schema=self.schema, table=self.table, pk=self.pk_column, column=self.column,
                    set_sql=self.backfill_expression, where_sql=f"{_quoted(self.column)} IS NULL",
                    key=f"change-{self.pk}")

    def stages(self) -> list[Stage]:
        """The ordered stages, each only if it has work: the lock-safe sequences of DESIGN.md."""
        check = dict(column=self.column, constraint=self.check_name)
        if self.kind == self.Kind.ADD_NOT_NULL_COLUMN:
            stages = [
                Stage("expand", (self._op("add_column_nullable", column=self.column, column_type=self.column_type),)),
                Stage("backfill", backfill=self.backfill_spec()),
                Stage("validate", (self._op("add_not_null_check_not_valid", **check),
                                   self._op("validate_constraint", constraint=self.check_name))),
                Stage("contract", (self._op("set_not_null", column=self.column),
                                   self._op("drop_constraint", constraint=self.check_name))),
            ]
        elif self.kind == self.Kind.SET_NOT_NULL:
            # The CHECK first, so no new NULL arrives while the old ones are backfilled.
            stages = [
                Stage("expand", (self._op("add_not_null_check_not_valid", **check),)),
                Stage("backfill", backfill=self.backfill_spec()),
                Stage("validate", (self._op("validate_constraint", constraint=self.check_name),)),
                Stage("contract", (self._op("set_not_null", column=self.column),
                                   self._op("drop_constraint", constraint=self.check_name))),
            ]
        elif self.kind == self.Kind.ADD_FOREIGN_KEY:
            stages = [
                Stage("expand", (self._op("create_index_concurrently", index=self.index_name, columns=(self.column,)),
                                 self._op("add_foreign_key_not_valid", column=self.column,
                                          constraint=self.foreign_key_name, ref_schema=self.ref_schema,
                                          ref_table=self.ref_table, ref_column=self.ref_column))),
                Stage("validate", (self._op("validate_constraint", constraint=self.foreign_key_name),)),
            ]
        else:
            stages = [Stage("expand", (self._op("create_index_concurrently", index=self.index_name,
                                                columns=tuple(self.index_columns)),))]
        return stages

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.stages() if s.name == name), None)


def _quoted(name: str) -> str:
    return sql.Identifier(name).as_string(None)
