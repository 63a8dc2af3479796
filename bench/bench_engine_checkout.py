"""Engine checkout: what one `SELECT 1` costs through the console's engine registry, compared with
the same query on a raw psycopg connection kept open.

The engine path is the console's real one: `with engines.connect(target) as conn:
conn.execute(text("SELECT 1"))`, i.e. registry lookup (target fingerprint), pool checkout (pinged only
when idle long or with bytes waiting), BEGIN, the timeouts (sent only when they differ from the
session defaults), the query, COMMIT and the check-in.
The raw path is `conn.execute("SELECT 1")` on an autocommit psycopg connection.

Both run against the same demo primary, interleaved in rounds (alternating which goes first) so
that machine noise hits both alike; each figure is the median of the per-round means.
"""

from __future__ import annotations

import statistics
import time

import psycopg
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

    def lookups(n: int) -> None:
        for _ in range(n):
            engines.engine_for(target)

    engines.forget(TARGET_PK)
    try:
        with engines.connect(target) as conn:  # the engine reaches the right server
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
            assert conn.execute(text("SELECT current_setting('port')::int")).scalar_one() == target.port

        with psycopg.connect(ctx.conninfo("primary", "postgres"), autocommit=True) as raw:
            assert raw.execute("SELECT 1").fetchone() == (1,)

            def raw_queries(n: int) -> None:
                for _ in range(n):
                    raw.execute("SELECT 1")

            engine_queries(WARMUP)
            raw_queries(WARMUP)
            engine_means, raw_means = [], []
            for round_no in range(ROUNDS):
                if round_no % 2 == 0:
                    engine_means.append(_per_call_us(engine_queries, PER_ROUND))
                    raw_means.append(_per_call_us(raw_queries, PER_ROUND))
                else:
                    raw_means.append(_per_call_us(raw_queries, PER_ROUND))
                    engine_means.append(_per_call_us(engine_queries, PER_ROUND))

        lookups(LOOKUPS_PER_ROUND)  # warm registry: the engine exists, only the lookup is timed
        lookup_means = [_per_call_us(lookups, LOOKUPS_PER_ROUND) for _ in range(LOOKUP_ROUNDS)]
    finally:
        engines.forget(TARGET_PK)

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
        "engine_registry_lookup_us": round(statistics.median(lookup_means), 3),
    }
