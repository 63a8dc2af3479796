"""Every name the validators accept survives psycopg's identifier quoting unchanged on the suite's
real PostgreSQL: `SELECT 1 AS <name>` gives back a column of exactly that name (no truncation at
NAMEDATALEN, no case folding, no keyword trouble)."""

import psycopg
import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st
from psycopg import sql

from console.validators import PG_NAME_RE, TARGET_NAME_RE, validate_pg_name, validate_target_name
from tenants.models import SLUG_RE, validate_tenant_slug

VALIDATORS = {
    "pg name": (validate_pg_name, PG_NAME_RE),
    "target name": (validate_target_name, TARGET_NAME_RE),
    "tenant slug": (validate_tenant_slug, SLUG_RE),
}
EXAMPLES = hypothesis_settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def conn(fleet):
    with psycopg.connect(host="127.0.0.1", port=fleet.port("primary"), user="postgres", password=fleet.superuser_password,
                         dbname="postgres", autocommit=True) as conn:
        yield conn


def _accepted(validate, name: str) -> bool:
    try:
        validate(name)
    except ValidationError:
        return False
    return True


def _round_trips(conn, name: str) -> str:
    cursor = conn.execute(sql.SQL("SELECT 1 AS {}").format(sql.Identifier(name)))
    return cursor.description[0].name


@pytest.mark.parametrize("kind", VALIDATORS)
def test_it_round_trips_every_name_of_the_accepted_shape(kind, conn):
    validate, pattern = VALIDATORS[kind]

    @EXAMPLES
    @given(st.from_regex(pattern, fullmatch=True))
    def check(name):
        if kind == "tenant slug" and not _accepted(validate, name):
            return  # a reserved slug, refused by name
        assert _accepted(validate, name)
        assert _round_trips(conn, name) == name
        if kind == "tenant slug":  # its schema and database name
            assert _round_trips(conn, settings.TENANT_NAME_PREFIX + name) == settings.TENANT_NAME_PREFIX + name

    check()


@pytest.mark.parametrize("kind", VALIDATORS)
def test_it_round_trips_any_text_it_accepts(kind, conn):
    validate, _ = VALIDATORS[kind]

    @EXAMPLES
    @given(st.text(min_size=1, max_size=80) | st.text(alphabet="aZ_09-\"' .;\x00\u00e9\u202e", min_size=1, max_size=70))
    def check(name):
        if _accepted(validate, name):
            assert _round_trips(conn, name) == name

    check()


def test_it_refuses_names_longer_than_namedatalen(conn):
    name = "a" * 64
    assert not _accepted(validate_pg_name, name) and not _accepted(validate_target_name, name)
    assert _round_trips(conn, name) != name  # what the validators spare us: PostgreSQL truncates it
