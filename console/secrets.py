"""Target passwords: either the name of an environment variable, or a value encrypted at rest.

A password is never rendered, logged, exported or put into job output; `redact` scrubs one
from any text that could carry it (driver error messages, for instance).
"""

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


class SecretUnavailable(Exception):
    pass


def _fernet() -> Fernet:
    digest = hashlib.sha256(settings.FIELD_ENCRYPTION_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretUnavailable(
            "The stored password cannot be decrypted: CONSOLE_FIELD_ENCRYPTION_KEY changed. "
            "Enter the password again on the target's edit page."
        ) from exc


def redact(text: str, *secrets: str | None) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "********")
    return text


def check_env_name_allowed(name: str) -> None:
    """Only variables meant for target passwords may be read: an admin must not be able to point a
    target at the console's own secrets (CONSOLE_SECRET_KEY, say) and catch them on a fake server."""
    prefix = settings.TARGET_PASSWORD_ENV_PREFIX
    if not name.startswith(prefix):
        raise SecretUnavailable(
            f"The environment variable {name} is not one the console reads passwords from: "
            f"their names start with {prefix} (TARGET_PASSWORD_ENV_PREFIX)."
        )


def driver_message(exc: BaseException, *passwords: str | None, with_type: bool = False) -> str:
    """The first line of what the driver (or PostgreSQL) said, never with a password in it: the
    one way the console turns a database error into words for a page, a job or a log line.
    Looks through SQLAlchemy's wrapper (`.orig`) and Django's (`__cause__`) to the driver's error."""
    original = getattr(exc, "orig", None) or exc
    cause = getattr(original, "__cause__", None)
    if cause is not None and type(cause).__module__.startswith("psycopg"):
        original = cause
    lines = str(original).strip().splitlines()
    text = lines[0] if lines else type(original).__name__
    if with_type and lines:
        text = f"{type(original).__name__}: {text}"
    return redact(text, *passwords)
