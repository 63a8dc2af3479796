"""Validation of names that end up in connection parameters or SQL identifiers.

Validation comes first and refuses anything unusual; quoting by the driver comes second
(psycopg.sql.Identifier). Neither replaces the other.
"""

import ipaddress
import re

from django.core.exceptions import ValidationError

TARGET_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
PG_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")
TAG_RE = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,31}$")


def validate_target_name(value: str) -> None:
    if not TARGET_NAME_RE.fullmatch(value or ""):
        raise ValidationError(
            "Use 1-63 characters: lowercase letters, digits and hyphens, starting with a letter.",
            code="bad_target_name",
        )


def validate_pg_name(value: str) -> None:
    """Database and role names: plain identifiers only, at most 63 bytes (NAMEDATALEN - 1)."""
    if not PG_NAME_RE.fullmatch(value or ""):
        raise ValidationError(
            "Use 1-63 characters: ASCII letters, digits and underscores, not starting with a digit.",
            code="bad_pg_name",
        )


def validate_host(value: str) -> None:
    try:
        ipaddress.ip_address(value)
        return
    except ValueError:
        pass
    if not HOSTNAME_RE.fullmatch(value or ""):
        raise ValidationError("Enter a hostname or an IP address.", code="bad_host")


def validate_env_name(value: str) -> None:
    if not ENV_NAME_RE.fullmatch(value or ""):
        raise ValidationError(
            "An environment variable name: uppercase letters, digits and underscores.",
            code="bad_env_name",
        )


def validate_tags(value) -> None:
    prefix = settings.TARGET_PASSWORD_ENV_PREFIX
    if not value.startswith(prefix):
        raise ValidationError(
            f"Password variables must start with {prefix} (TARGET_PASSWORD_ENV_PREFIX), so no other "
            "variable of the console's processes can be read through a target.",
            code="env_name_not_allowed",
        )
    if not isinstance(value, list) or not all(isinstance(t, str) and TAG_RE.fullmatch(t) for t in value):
        raise ValidationError(
            "Tags are short lowercase words (letters, digits, '_', '.', ':', '-').", code="bad_tags"
        )
