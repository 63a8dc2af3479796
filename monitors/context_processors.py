from django.db.models import Count

from monitors.models import Alert


def alerts(request):
    """The open alerts' badges in every page's navigation."""
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    counts = dict(Alert.open().values_list("level").annotate(n=Count("id")))
    badges = [
        {"level": level, "text": f"{counts[level]} {level}"}
        for level in (Alert.Level.CRITICAL, Alert.Level.WARNING)
        if counts.get(level)
    ]
    return {"alert_badges": badges}
