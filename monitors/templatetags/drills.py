"""Template helpers of the drill pages: a time to come, a duration in seconds, and a tenant's last
passing drill (the tenant page includes it)."""

from django import template
from django.utils import timezone

from monitors.drills.models import BackupPolicy, DrillRun

register = template.Library()


@register.filter
def from_now(moment) -> str:
    """'in 5 min', 'due now' for a moment to come."""
    if not moment:
        return "not scheduled"
    seconds = (moment - timezone.now()).total_seconds()
    if seconds <= 0:
        return "due now"
    from console.templatetags.console_tags import _span

    return f"in {_span(seconds)}"


@register.filter
def duration_s(value) -> str:
    """Seconds, to the tenth below a minute ('4.2 s'), else minutes or hours ('3 min 5 s')."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):  # unknown (no drill yet: "")
        return "—"
    if value < 60:
        return f"{value:.1f} s"
    minutes, secs = divmod(int(value), 60)
    if minutes < 90:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours < 48 else f"{hours // 24} d {hours % 24} h"


@register.inclusion_tag("monitors/_tenant_drill.html", takes_context=True)
def tenant_drill(context, tenant):
    runs = DrillRun.objects.filter(backup__tenant=tenant).select_related("backup")
    return {"user_roles": context.get("user_roles", ()), "tenant": tenant, "last_passed": runs.filter(passed=True).order_by("-verified_at", "-id").first(),
            "last_run": runs.order_by("-created_at", "-id").first(),
            "policy": BackupPolicy.objects.filter(tenant=tenant).first()}
