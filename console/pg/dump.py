"""pg_dump of a target database (or one schema of it), in a session of its own (a snapshot: never
through PgBouncer's transaction pool). The password travels in the environment, never on the
command line, and never comes back in an error."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from django.conf import settings

from console.secrets import redact


class DumpFailed(Exception):
    pass


def pg_dump(target, out: Path, *, database: str | None = None, schema: str | None = None,
            credential: str = "change", timeout_s: float = 3600) -> None:
    """A custom-format dump of `database` (the target's own by default), or only `schema`, into
    `out`; removed again if pg_dump fails. A PgBouncer target is dumped from its primary."""
    server = target.upstream if target.behind_pgbouncer and target.upstream_id else target
    login = server.credential(credential)
    args = [
        settings.TENANT_PG_DUMP, "--format=custom", "--no-password",
        "--host", server.host, "--port", str(server.port), "--username", login.username,
        "--dbname", database or server.dbname, "--file", str(out),
    ]
    if schema:
        args += ["--schema", schema]
    password = login.password()
    env = {**os.environ, "PGCONNECT_TIMEOUT": str(server.connect_timeout_s)}
    if password:
        env["PGPASSWORD"] = password
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout_s)
    if result.returncode != 0:
        out.unlink(missing_ok=True)
        raise DumpFailed(f"pg_dump failed: {redact(result.stderr.strip()[-800:], password)}")
