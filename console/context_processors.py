from django.db.models import Count

from console import approvals, roles


def console(request):
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    from monitors.models import Alert

    counts = dict(Alert.open().values_list("level").annotate(n=Count("id")))
    badges = [
        {"level": level, "text": f"{counts[level]} {level}"}
        for level in (Alert.Level.CRITICAL, Alert.Level.WARNING)
        if counts.get(level)
    ]
    return {
        "user_role": roles.primary_role(request.user),
        "user_roles": roles.roles_of(request.user),
        "alert_badges": badges,
        "approvals_waiting": approvals.waiting_for(request.user).count(),
    }
