"""django-axes' hooks: the username a failed login is counted under, and the lockout response."""

from axes.helpers import get_cool_off
from django.contrib.auth.forms import AuthenticationForm
from django.shortcuts import render

from console import audit

# AccessAttempt.username is a varchar(255); Django's own usernames are at most 150 characters.
USERNAME_MAX_CHARS = 255


def username(request, credentials=None) -> str | None:
    """AXES_USERNAME_CALLABLE: the typed username, cut to what axes can store (a longer one is
    no user's, and would fail the login with a 500)."""
    typed = (credentials or {}).get("username") or request.POST.get("username")
    return typed[:USERNAME_MAX_CHARS] if typed else None


def locked_out(request, original_response=None, credentials=None):
    """AXES_LOCKOUT_CALLABLE: audit the refused login and say why on the login page."""
    name = username(request, credentials) or ""
    minutes = round(get_cool_off(request).total_seconds() / 60)
    audit.record(request, "login.locked_out", outcome="denied",
                 detail={"username": name, "failures": getattr(request, "axes_failures_since_start", None)})
    context = {
        "form": AuthenticationForm(request, initial={"username": name}),
        "locked_out": f"Too many failed logins for {name} from your address: "
                      f"logging in as {name} from here is locked for {minutes} minutes.",
    }
    return render(request, "registration/login.html", context, status=429)
