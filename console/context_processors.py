from console import approvals, roles


def console(request):
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    return {
        "user_role": roles.primary_role(request.user),
        "user_roles": roles.roles_of(request.user),
        "approvals_waiting": approvals.waiting_for(request.user).count(),
    }
