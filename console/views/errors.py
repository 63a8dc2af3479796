"""Error responses the console renders itself: 500, CSRF failure and the login lockout."""

from axes.helpers import get_client_username, get_cool_off
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpResponseServerError
from django.shortcuts import render
from django.template.loader import render_to_string

from console import audit


def server_error(request):
    """The 500 page, with the request id its log lines carry."""
    context = {"request_id": getattr(request, "request_id", "")}
    try:
        body = render_to_string("500.html", context, request=request)
    except Exception:  # what failed may be what the navigation reads (the console DB): without it
        body = render_to_string("500.html", context)
    return HttpResponseServerError(body)


def csrf_failure(request, reason=""):
    """CSRF_FAILURE_VIEW: the console's 403 page instead of Django's inline-styled one."""
    message = (f"This form's security token was missing or out of date ({reason}). "
               "Reload the page and try again; if it keeps happening, log in again.")
    return render(request, "403.html", {"message": message}, status=403)


def login_locked_out(request, original_response=None, credentials=None):
    """django-axes refused a login (AXES_LOCKOUT_CALLABLE): audit it, and say so on the login page."""
    username = get_client_username(request, credentials) or ""
    minutes = round(get_cool_off(request).total_seconds() / 60)
    audit.record(request, "login.locked_out", outcome="denied",
                 detail={"username": username, "failures": getattr(request, "axes_failures_since_start", None)})
    context = {
        "form": AuthenticationForm(request, initial={"username": username}),
        "locked_out": f"Too many failed logins for {username} from your address: "
                      f"logging in as {username} from here is locked for {minutes} minutes.",
    }
    return render(request, "registration/login.html", context, status=429)
