"""The one bounded fan-out of the console: work on many items (targets, tenants) a few at a time."""

from __future__ import annotations

import queue
import threading

from django.db import connection as console_db


def run_bounded(items: list, work, parallelism: int) -> list:
    """work(item) for every item on at most `parallelism` threads, each keeping its own pooled
    target connection and console DB connection for all its items; the results in the items'
    order. An exception that escapes `work` stops handing out items and is raised here once the
    threads are done (work that must go on past a failing item catches its own errors)."""
    parallelism = max(1, min(parallelism, len(items)))
    if parallelism == 1:
        return [work(item) for item in items]
    pending: queue.SimpleQueue = queue.SimpleQueue()
    for index, item in enumerate(items):
        pending.put((index, item))
    results, errors = [None] * len(items), []
    stop = threading.Event()

    def worker():
        try:
            while not stop.is_set():
                try:
                    index, item = pending.get_nowait()
                except queue.Empty:
                    return
                try:
                    results[index] = work(item)
                except BaseException as exc:  # noqa: BLE001  (re-raised in the caller's thread)
                    errors.append(exc)
                    stop.set()
        finally:
            console_db.close()

    threads = [threading.Thread(target=worker, name=f"fanout-{n}") for n in range(parallelism)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results
