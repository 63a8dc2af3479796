"""Engine checkout: what one `SELECT 1` costs through the console's engine registry, compared with
the same query on a raw psycopg connection kept open.

The engine path is the console's real one: `with engines.connect(target) as conn:
conn.execute(text("SELECT 1"))`, i.e. registry lookup (target fingerprint), pool checkout (pinged only
when idle long or with bytes waiting), BEGIN, the timeouts (sent only when they differ from the
session defaults), the query, COMMIT and the check-in.
The raw path is `conn.execute("SELECT 1")` on an autocommit psycopg connection.

Two floors are measured beside them, to show where the engine's time goes: the same query in its
own transaction on a raw psycopg connection (BEGIN, SELECT 1, COMMIT: three round trips, what any
transaction costs), and through a bare SQLAlchemy engine (its pool and Core, no console code).

Both run against the same demo primary, interleaved in rounds (alternating which goes first) so
that machine noise hits both alike; each figure is the median of the per-round means.
"""

from __future__ import annotations

import statistics
import time

import psycopg
import sqlalchemy
from sqlalchemy import text

from console import engines
from console.models import Target

WARMUP = 300  # queries per path before measuring
ROUNDS = 100
PER_ROUND = 30  # ROUNDS * PER_ROUND = 3000 queries per path; short rounds interleave finely
LOOKUP_ROUNDS = 30
LOOKUPS_PER_ROUND = 2000
TARGET_PK = 1  # per-process registry; nothing else registers a target in the bench process


def _per_call_us(fn, n: int) -> float:
    started = time.perf_counter_ns()
    fn(n)
    return (time.perf_counter_ns() - started) / n / 1000


def run(ctx) -> dict[str, float]:
    target = Target(
        pk=TARGET_PK,
        name="bench-primary",
        role=Target.Role.PRIMARY,
        host=ctx.host,
        port=ctx.port("primary"),
        dbname="postgres",
        username=ctx.superuser,
        password_env=ctx.password_env,
    )

    def engine_queries(n: int) -> None:
        for _ in range(n):
            with engines.connect(target) as conn:
                conn.execute(text("SELECT 1"))

    bare = sqlalchemy.create_engine(engines._url(target), pool_size=1, max_overflow=0)

    def bare_engine_queries(n: int) -> None:
        for _ in range(n):
            with bare.begin() as conn:
                conn.execute(text("SELECT 1"))

    def lookups(n: int) -> None:
        for _ in range(n):
            engines.engine_for(target)

    engines.forget(TARGET_PK)
    try:
        with engines.connect(target) as conn:  # the engine reaches the right server
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
            assert conn.execute(text("SELECT current_setting('port')::int")).scalar_one() == target.port

        with (psycopg.connect(ctx.conninfo("primary", "postgres"), autocommit=True) as raw,
              psycopg.connect(ctx.conninfo("primary", "postgres")) as in_transaction):
            assert raw.execute("SELECT 1").fetchone() == (1,)

            def raw_queries(n: int) -> None:
                for _ in range(n):
                    raw.execute("SELECT 1")

            def transaction_queries(n: int) -> None:
                for _ in range(n):
                    in_transaction.execute("SELECT 1")
                    in_transaction.commit()

            paths = {"engine": engine_queries, "raw": raw_queries, "transaction": transaction_queries,
                     "bare": bare_engine_queries}
            for queries in paths.values():
                queries(WARMUP)
            means = {name: [] for name in paths}
            for round_no in range(ROUNDS):  # each round in another order
                names = list(paths)
                for name in names[round_no % 4:] + names[:round_no % 4]:
                    means[name].append(_per_call_us(paths[name], PER_ROUND))
            engine_means, raw_means = means["engine"], means["raw"]

        lookups(LOOKUPS_PER_ROUND)  # warm registry: the engine exists, only the lookup is timed
        lookup_means = [_per_call_us(lookups, LOOKUPS_PER_ROUND) for _ in range(LOOKUP_ROUNDS)]
    finally:
        engines.forget(TARGET_PK)
        bare.dispose()

    engine_us = statistics.median(engine_means)
    raw_us = statistics.median(raw_means)
    ctx.log(
        f"engine_checkout: per-round means, min/median/max us: engine {min(engine_means):.1f}/"
        f"{engine_us:.1f}/{max(engine_means):.1f}, raw {min(raw_means):.1f}/{raw_us:.1f}/{max(raw_means):.1f}"
    )
    return {
        "engine_checkout_overhead_ratio": round(engine_us / raw_us, 3),
        "engine_select1_us": round(engine_us, 2),
        "raw_select1_us": round(raw_us, 2),
        "raw_transaction_select1_us": round(statistics.median(means["transaction"]), 2),
        "sqlalchemy_engine_select1_us": round(statistics.median(means["bare"]), 2),
        "engine_registry_lookup_us": round(statistics.median(lookup_means), 3),
    }
