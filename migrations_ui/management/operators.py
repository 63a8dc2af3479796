"""Who a management command acts for: an active user with the operator role, as the page's
action of the same name requires."""

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from console.roles import OPERATOR, has_role


def operator_named(username: str, action: str):
    """The active user `username`, if an operator; otherwise CommandError saying why (nothing is done)."""
    user = get_user_model().objects.filter(username=username, is_active=True).first()
    if user is None:
        raise CommandError(f"no active user {username!r}")
    if not has_role(user, OPERATOR):
        raise CommandError(f"{user.get_username()} is not an operator ({action}): nothing requested")
    return user
