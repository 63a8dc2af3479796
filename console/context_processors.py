from console import roles
from console.models import Target


def console(request):
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    down = Target.objects.filter(status=Target.Status.DOWN).values_list("name", flat=True)
    return {
        "user_role": roles.primary_role(request.user),
        "user_roles": roles.roles_of(request.user),
        "alert_badges": [{"level": "critical", "text": f"{name} down"} for name in down],
    }
