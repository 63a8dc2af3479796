"""Validation of names that end up in connection parameters or SQL identifiers.

Validation comes first and refuses anything unusual; quoting by the driver comes second
(psycopg.sql.Identifier). Neither replaces the other.
"""

import ipaddress
import re
import unicodedata

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
    from django.conf import settings

    if not ENV_NAME_RE.fullmatch(value or ""):
        raise ValidationError(
            "An environment variable name: uppercase letters, digits and underscores.",
            code="bad_env_name",
        )
    prefix = settings.TARGET_PASSWORD_ENV_PREFIX
    if not value.startswith(prefix):
        raise ValidationError(
            f"Password variables must start with {prefix} (TARGET_PASSWORD_ENV_PREFIX), so no other "
            "variable of the console's processes can be read through a target.",
            code="env_name_not_allowed",
        )


def validate_tags(value) -> None:
    if not isinstance(value, list) or not all(isinstance(t, str) and TAG_RE.fullmatch(t) for t in value):
        raise ValidationError(
            "Tags are short lowercase words (letters, digits, '_', '.', ':', '-').", code="bad_tags"
        )


# Bidi embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069) and the implicit marks
# (U+200E, U+200F, U+061C) reorder how a name is displayed: "admin\u202eusr" reads as another name.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")


def validate_display_name(value: str) -> None:
    """Free-text names shown in pages, logs and audit rows: no control characters (NUL, newlines,
    escapes), no line separators and no bidi controls."""
    for position, char in enumerate(value or "", start=1):
        if char in BIDI_CONTROLS or unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            raise ValidationError(
                f"Names cannot contain control or bidirectional-text characters "
                f"(U+{ord(char):04X} at character {position}).",
                code="control_character",
            )
