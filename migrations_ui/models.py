import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.urls import reverse

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
