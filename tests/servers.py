"""Direct connections to the suite's servers, for what a test does behind the console's back:
set a scene (a blocked session, a paused replica), or look at the truth (pg_stat_activity)."""

import psycopg


def superuser(fleet, server: str = "primary", dbname: str = "demo", **kwargs) -> psycopg.Connection:
    """An autocommit connection to one of the fleet's servers, as the superuser unless `user` and
    `password` say otherwise."""
    kwargs.setdefault("autocommit", True)
    kwargs.setdefault("user", "postgres")
    kwargs.setdefault("password", fleet.superuser_password)
    return psycopg.connect(host="127.0.0.1", port=fleet.port(server), dbname=dbname, **kwargs)


def application(fleet, server: str = "primary", dbname: str = "demo", **kwargs) -> psycopg.Connection:
    """A session of an ordinary role (the owner, not a superuser): what the monitor role may signal."""
    return superuser(fleet, server, dbname, user="fleet_owner", password=fleet.owner_password, **kwargs)
