"""Error pages the console renders itself: the 500 page and the CSRF failure."""

from django.http import HttpResponseServerError
from django.shortcuts import render
from django.template.loader import render_to_string


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

