import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.urls import reverse
from console.pg.backfill import Spec
from console.validators import validate_pg_name
from migrations_ui import staging
from migrations_ui.staging import Stage


# The rate chart: an interval between batches this many times the usual one (and at least
# PAUSE_MIN_S) was a pause or a throttled wait.
PAUSE_FACTOR = 5
PAUSE_MIN_S = 1.0


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
    # [unix seconds, rows done] as the console records them (`with_sample`): the rate chart.
    rate_samples = models.JSONField(default=list, blank=True)

    RATE_SAMPLES = 500

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.schema}.{self.table}.{self.set_column} on {self.target}"

    def with_sample(self, at_s: float, rows: int, *, new_point: bool = False) -> list[list[float]]:
        """The rate samples with (at_s, rows) added: the whole backfill's history in at most
        RATE_SAMPLES points, evenly spaced. While the last interval is shorter than their mean
        spacing the last point moves on (it stays current); then a new one starts. Past
        RATE_SAMPLES every other point goes, the first and the last kept, and the spacing doubles.
        A pause stays one long interval, a gap in `rates`. `new_point`: always a point of its own
        (an attempt's start, after a pause or a throttled wait)."""
        samples = [list(sample) for sample in (self.rate_samples or [])]
        if not new_point and len(samples) >= 3:
            spacing_s = (samples[-1][0] - samples[0][0]) / (len(samples) - 1)
            if samples[-1][0] - samples[-2][0] < spacing_s:
                samples[-1] = [at_s, rows]
                return samples
        samples.append([at_s, rows])
        if len(samples) > self.RATE_SAMPLES:
            samples = samples[:-1][::2] + [samples[-1]]
        return samples

    def rates(self) -> list[tuple[float, float | None]]:
        """(unix seconds, rows per second since the sample before) for each sample but the first.
        An interval far longer than the backfill's usual one between batches (PAUSE_FACTOR times
        its median) was a pause or a throttled wait, not work: it is a gap, (its middle, None)."""
        points = [(t, rows) for t, rows in (self.rate_samples or [])]
        intervals = sorted(t - t_before for (t_before, _), (t, _) in zip(points, points[1:]) if t > t_before)
        if not intervals:
            return []
        longest_s = max(PAUSE_MIN_S, PAUSE_FACTOR * intervals[len(intervals) // 2])
        rates = []
        for (t_before, rows_before), (t, rows) in zip(points, points[1:]):
            if t <= t_before:
                continue
            rates.append(((t_before + t) / 2, None) if t - t_before > longest_s else (t, (rows - rows_before) / (t - t_before)))
        return rates

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


class Change(models.Model):
    """A schema change written in the console for one table of a target's database, run as the
    lock-safe stages of DESIGN.md's staged migrations (`stages()`), each approved apart."""

    class Kind(models.TextChoices):
        ADD_NOT_NULL_COLUMN = "add_not_null_column", "Add a NOT NULL column"
        SET_NOT_NULL = "set_not_null", "Make an existing column NOT NULL"
        ADD_FOREIGN_KEY = "add_foreign_key", "Add a foreign key"
        ADD_INDEX = "add_index", "Add an index"

    STAGES = staging.STAGES

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

    def definition(self) -> staging.Definition:
        return staging.Definition(
            kind=self.kind, table=self.table, column=self.column,
            column_type=self.column_type if self.kind == self.Kind.ADD_NOT_NULL_COLUMN else "",
            backfill_expression=self.backfill_expression, pk_column=self.pk_column, ref_table=self.ref_table,
            ref_column=self.ref_column, ref_schema=self.ref_schema, index_columns=tuple(self.index_columns))

    @property
    def check_name(self) -> str:
        return self.definition().check_name

    @property
    def index_name(self) -> str:
        return self.definition().index_name

    @property
    def foreign_key_name(self) -> str:
        return self.definition().foreign_key_name

    def backfill_spec(self) -> Spec:
        return self.definition().backfill_spec(self.schema, key=f"change-{self.pk}")

    def stages(self) -> list[Stage]:
        """The ordered stages, each only if it has work: the lock-safe sequences of DESIGN.md
        (migrations_ui/staging.py, shared with the application's staged revisions)."""
        return self.definition().stages(self.schema, backfill_key=f"change-{self.pk}")

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.stages() if s.name == name), None)


class Rollout(models.Model):
    """One stage of a staged change of the application (one staged Alembic revision) rolled out
    over the tenants: the canary first, then waves, a few tenants at a time, stopping at the first
    failure (migrations_ui/rollouts.py). The set of tenants (`units`) and the waves are fixed
    when it is requested; its approval binds to them and to the stage's exact SQL."""

    change_name = models.CharField(max_length=200)
    stage = models.CharField(max_length=16)
    revision = models.CharField(max_length=64)
    down_revision = models.CharField(max_length=64, blank=True)
    canary = models.CharField(max_length=200, blank=True, help_text="The unit key chosen, or empty: the smallest.")
    wave_sizes = models.JSONField(default=list)  # after the canary; the last size repeats
    parallelism = models.PositiveSmallIntegerField(default=4, validators=[MinValueValidator(1), MaxValueValidator(64)])
    units = models.JSONField(default=list)  # [{key, target_id, database, schema, tenant_ids}], resolved when requested
    waves = models.JSONField(default=list)  # [[canary key], [keys of wave 1], ...]
    job = models.OneToOneField("console.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="rollout")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"rollout of {self.change_name} {self.stage} ({self.revision}) over {len(self.units)} tenant(s)"

    def get_absolute_url(self):
        return reverse("staged-change", args=[self.change_name])

    @property
    def is_live(self) -> bool:
        return self.job is not None and not self.job.is_finished


class RolloutTenant(models.Model):
    """One tenant (or the shared schema) of a rollout: one cell of the tenants × stages grid."""

    class State(models.TextChoices):
        PENDING = "pending", "Not run"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        ALREADY = "already", "Already there"
        FAILED = "failed", "Failed"

    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="cells")
    key = models.CharField(max_length=200)
    tenant = models.ForeignKey("tenants.Tenant", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    wave = models.PositiveSmallIntegerField()  # 0: the canary
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    version_before = models.CharField(max_length=64, blank=True)
    version_after = models.CharField(max_length=64, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True)
    # A backfill stage: this tenant's run of the backfill engine (its live rows, rate, checkpoint).
    backfill = models.OneToOneField(Backfill, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="rollout_cell")

    class Meta:
        ordering = ["wave", "key"]
        constraints = [models.UniqueConstraint(fields=["rollout", "key"], name="rollout_tenant_once")]

    def __str__(self):
        return f"{self.key}: {self.get_state_display()}"
