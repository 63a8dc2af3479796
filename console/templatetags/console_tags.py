from django import template
from django.utils import timezone

register = template.Library()


def _span(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 90 * 60:
        return f"{seconds // 60} min"
    if seconds < 48 * 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d"


@register.filter
def ago(moment) -> str:
    """'12 s ago', '5 min ago': precise enough for a live page."""
    if not moment:
        return "never"
    return f"{_span((timezone.now() - moment).total_seconds())} ago"


@register.filter
def seconds(value) -> str:
    return "—" if value is None else _span(value)
