"""Offboarding requests and approvals move from the tenant's own columns onto console Approval
rows (kind tenants.offboard), so every four-eyes action is asked for and decided one way."""

import hashlib
import json

from django.db import migrations

KIND = "tenants.offboard"


def _approval_of(tenant, Approval):
    """What the old columns knew, as an Approval. Its digest is of what they recorded, not of what
    an approver is shown today: a request still waiting is voided when decided, and asked again."""
    shown = {"tenant": tenant.slug, "recorded": "before approvals: requested and approved on the tenant"}
    digest = hashlib.sha256(json.dumps(shown, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    if tenant.state == "archived":
        decision = "used"
    elif tenant.offboard_approved_by_id:
        decision = "approved"
    else:
        decision = "pending"
    requested_at = tenant.offboard_requested_at
    return Approval(
        kind=KIND, object_type="tenant", object_id=str(tenant.pk), object_repr=tenant.slug[:200],
        summary=f"Offboard tenant {tenant.slug}: dump, then drop (recorded before approvals).",
        shown=shown, digest=digest, requested_by_id=tenant.offboard_requested_by_id,
        requested_at=requested_at, expires_at=requested_at, decision=decision,
        decided_by_id=tenant.offboard_approved_by_id, decided_at=tenant.offboard_approved_at,
        used_at=tenant.archived_at if decision == "used" else None,
    )


def forwards(apps, schema_editor):
    Tenant = apps.get_model("tenants", "Tenant")
    Approval = apps.get_model("console", "Approval")
    asked = Tenant.objects.filter(offboard_requested_by__isnull=False, offboard_requested_at__isnull=False)
    Approval.objects.bulk_create([_approval_of(tenant, Approval) for tenant in asked])


class Migration(migrations.Migration):

    dependencies = [
        ('tenants', '0002_onboarding_health_offboarding'),
        ('console', '0005_job_control_and_approvals'),
    ]

    operations = [
        migrations.RunPython(forwards, migrations.RunPython.noop),
        migrations.RemoveField(
            model_name='tenant',
            name='offboard_approved_at',
        ),
        migrations.RemoveField(
            model_name='tenant',
            name='offboard_approved_by',
        ),
        migrations.RemoveField(
            model_name='tenant',
            name='offboard_requested_at',
        ),
        migrations.RemoveField(
            model_name='tenant',
            name='offboard_requested_by',
        ),
    ]
