"""An audit row for every action that changes something, and for every refusal."""

from console.models import AuditEvent


def _client_addr(request) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


def record(request, action: str, obj=None, *, outcome: str = AuditEvent.Outcome.OK, detail=None, user=None):
    user = user or (request.user if request is not None else None)
    authenticated = user is not None and user.is_authenticated
    return AuditEvent.objects.create(
        actor=user if authenticated else None,
        actor_username=user.get_username() if authenticated else "",
        action=action,
        object_type=obj._meta.model_name if obj is not None else "",
        object_id=str(obj.pk) if obj is not None else "",
        object_repr=str(obj)[:200] if obj is not None else "",
        outcome=outcome,
        detail={k: v if isinstance(v, (str, int, float, bool, type(None), list, dict)) else str(v)
                for k, v in (detail or {}).items()},
        remote_addr=_client_addr(request) if request is not None else None,
    )
