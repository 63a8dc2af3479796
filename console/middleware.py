"""Request ids for logs and error pages, and one gate for control characters in requests."""

import contextvars
import logging
import re
import uuid

from django.core.signals import request_finished
from django.urls import Resolver404, resolve

_request_id = contextvars.ContextVar("request_id", default="-")

# C0 control characters (NUL among them) other than tab, LF and CR: PostgreSQL text cannot hold
# a NUL, and none of them belongs in a name, a filter or SQL typed into a form.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record, so one format serves requests, workers and commands."""

    def filter(self, record):
        record.request_id = _request_id.get()
        return True


class RequestIdMiddleware:
    """Gives each request an id: logged with everything it logs, sent as X-Request-ID, shown by
    the error pages. It stays set until the response is closed: Django logs 4xx responses after
    the last middleware has returned."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.request_id = uuid.uuid4().hex[:16]
        _request_id.set(request.request_id)
        response = self.get_response(request)
        response["X-Request-ID"] = request.request_id
        return response


def _forget_request_id(**_kwargs):
    _request_id.set("-")


request_finished.connect(_forget_request_id)


def _first_control_character(request) -> str | None:
    """Where the first control character is: 'path', or '“name” parameter'."""
    if CONTROL_CHARACTERS.search(request.path_info):
        return "path"
    for params in (request.GET, request.POST):
        for name, values in params.lists():
            if CONTROL_CHARACTERS.search(name) or any(CONTROL_CHARACTERS.search(v) for v in values):
                return f"“{CONTROL_CHARACTERS.sub('?', name)}” parameter"
    return None


class RefuseControlCharactersMiddleware:
    """Refuses a request whose path or GET/POST parameters hold a control character with 400,
    before any view sees it. A refused action is audited like any other refusal."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        where = _first_control_character(request)
        if where is None:
            return self.get_response(request)
        from console import audit, roles

        action_name = _action_of(request.path_info)
        if action_name:
            audit.record(request, action_name, outcome="denied", detail={"why": f"control character in the {where}"})
        return roles.bad_request(request, f"The request has a control character (such as a NUL byte) in the {where}: "
                                          "they are not allowed in any field or address.")


def _action_of(path: str) -> str | None:
    try:
        return getattr(resolve(path).func, "console_action", None)
    except Resolver404:
        return None
