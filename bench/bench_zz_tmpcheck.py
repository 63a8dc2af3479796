"""TEMPORARY: statement breakdown of one engine checkout, then a deliberate failure."""
import psycopg
from sqlalchemy import text
from console import engines
from console.models import Target

def run(ctx):
    t = Target(pk=7, name="x", host=ctx.host, port=ctx.port("primary"), dbname="postgres",
               username=ctx.superuser, password_env=ctx.password_env)
    with engines.connect(t) as c:
        c.execute(text("SELECT 1"))
    with psycopg.connect(ctx.conninfo(), autocommit=True) as raw:
        raw.execute("SELECT pg_stat_statements_reset()")
        for _ in range(100):
            with engines.connect(t) as c:
                c.execute(text("SELECT 1"))
        for row in raw.execute("SELECT calls, query FROM pg_stat_statements WHERE calls >= 100 ORDER BY calls DESC"):
            print(row)
    raise RuntimeError("deliberate failure to test the harness")
