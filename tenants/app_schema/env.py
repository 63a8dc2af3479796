"""Alembic environment for the command line (`alembic -c tenants/app_schema/alembic.ini -x
schema=tenant_acme upgrade head`). The console itself does not go through this file: it runs the
same revisions in-process on its pooled connections (tenants/migrator.py).

The connection comes from libpq's environment (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE),
so no password is ever on a command line. The schema given with `-x schema=` is validated, quoted
by the driver, set for the migration's transaction only and holds the version table.
"""

import re

from alembic import context
from psycopg import sql
from sqlalchemy import create_engine, pool

from tenants.app_schema.metadata import metadata

SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

config = context.config
schema = context.get_x_argument(as_dictionary=True).get("schema", "public")
if not SCHEMA_RE.match(schema):
    raise SystemExit(f"-x schema= must be a plain lowercase identifier, not {schema!r}")


def run_migrations_online() -> None:
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "postgresql+psycopg://", poolclass=pool.NullPool)
    with engine.connect() as connection:
        # For the session (its own connection, closed at the end): staged revisions leave the
        # revision's transaction for their autocommit blocks (VALIDATE, CREATE INDEX CONCURRENTLY).
        raw = connection.connection.driver_connection
        set_path = sql.SQL("SET search_path TO {}").format(sql.Identifier(schema))
        connection.exec_driver_sql(set_path.as_string(raw))
        connection.commit()
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table_schema=schema,
            transactional_ddl=True,
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline mode is not supported: the console runs migrations online")
run_migrations_online()
