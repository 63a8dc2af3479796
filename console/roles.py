"""Roles and the permission check every action goes through.

Roles are Django groups. Each role grants the roles it includes: an operator can do everything
a viewer can; an admin everything. Every view that changes something is declared with
`@action(name, role)`, which registers it (the role-matrix test walks the registry), refuses
other roles with 403 and writes an audit row for the refusal.
"""

from functools import wraps

from django.contrib.auth.models import Group
from django.http import HttpResponseBadRequest, HttpResponseForbidden
from django.template.loader import render_to_string

VIEWER = "viewer"
OPERATOR = "operator"
APPROVER = "approver"
ADMIN = "admin"
ROLES = (VIEWER, OPERATOR, APPROVER, ADMIN)

GRANTS = {
    VIEWER: {VIEWER},
    OPERATOR: {OPERATOR, VIEWER},
    APPROVER: {APPROVER, VIEWER},
    ADMIN: {ADMIN, OPERATOR, APPROVER, VIEWER},
}

# action name -> (role required, view name)
ACTIONS: dict[str, tuple[str, str]] = {}


def ensure_groups() -> None:
    for role in ROLES:
        Group.objects.get_or_create(name=role)


def roles_of(user) -> set[str]:
    if not user.is_authenticated:
        return set()
    if user.is_superuser:
        return set(ROLES)
    cached = getattr(user, "_console_roles", None)
    if cached is None:
        cached = set()
        for name in user.groups.values_list("name", flat=True):
            cached |= GRANTS.get(name, set())
        user._console_roles = cached
    return cached


def has_role(user, role: str) -> bool:
    return role in roles_of(user)


def primary_role(user) -> str:
    """The highest role, for display."""
    granted = roles_of(user)
    for role in (ADMIN, APPROVER, OPERATOR, VIEWER):
        if role in granted:
            return role
    return "none"


def can(user, action_name: str) -> bool:
    role, _view = ACTIONS[action_name]
    return has_role(user, role)


def forbidden(request, message: str):
    body = render_to_string("403.html", {"message": message}, request=request)
    return HttpResponseForbidden(body)


def bad_request(request, message: str):
    body = render_to_string("400.html", {"message": message}, request=request)
    return HttpResponseBadRequest(body)


def action(name: str, role: str):
    """Declare a view as the action `name`, allowed to `role` and the roles above it."""

    def decorator(view):
        ACTIONS[name] = (role, f"{view.__module__}.{view.__name__}")

        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not has_role(request.user, role):
                from console import audit

                audit.record(request, name, outcome="denied", detail={"needs": role, **kwargs})
                return forbidden(request, f"This needs the {role} role.")
            return view(request, *args, **kwargs)

        wrapped.console_action = name
        return wrapped

    return decorator
