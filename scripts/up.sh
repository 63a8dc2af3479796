#!/usr/bin/env bash
# Starts the console with its embedded demo fleet under .fleet/ (idempotent: run it again at will).
set -euo pipefail
cd "$(dirname "$0")/.."

FLEET_DIR=${FLEET_DIR:-.fleet}
BASE_PORT=${FLEET_BASE_PORT:-54320}
WEB_PORT=${CONSOLE_PORT:-8000}
RUN="$FLEET_DIR/run"
LOG="$FLEET_DIR/log"

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if [ "${1:-}" = "--status" ]; then
  for name in web worker monitor-worker beat; do
    if alive "$RUN/$name.pid"; then echo "$name: running (pid $(cat "$RUN/$name.pid"))"; else echo "$name: stopped"; fi
  done
  exit 0
fi

.venv/bin/python scripts/localfleet.py up --root "$FLEET_DIR" --base-port "$BASE_PORT" --env-file "$FLEET_DIR/fleet.env"
mkdir -p "$RUN" "$LOG"
if [ ! -f "$FLEET_DIR/console.env" ]; then
  umask 077
  {
    echo "CONSOLE_SECRET_KEY=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(48))')"
    echo "CONSOLE_FIELD_ENCRYPTION_KEY=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(48))')"
  } > "$FLEET_DIR/console.env"
  umask 022
fi
set -a
. "$FLEET_DIR/fleet.env"
. "$FLEET_DIR/console.env"
set +a

.venv/bin/python manage.py migrate --noinput >/dev/null
echo "[console] demo fleet:"
.venv/bin/python manage.py bootstrap_demo

# Two workers: jobs on one queue, monitor work (samplers, alerts, the reaper) on the other.
if ! alive "$RUN/worker.pid"; then
  .venv/bin/celery -A console worker --detach --concurrency 2 -n "worker@%h" -Q jobs \
    --pidfile "$RUN/worker.pid" --logfile "$LOG/worker.log" --loglevel INFO
  echo "[console] job worker started"
fi
if ! alive "$RUN/monitor-worker.pid"; then
  .venv/bin/celery -A console worker --detach --concurrency 2 -n "monitor@%h" -Q monitor \
    --pidfile "$RUN/monitor-worker.pid" --logfile "$LOG/monitor-worker.log" --loglevel INFO
  echo "[console] monitor worker started"
fi
if ! alive "$RUN/beat.pid"; then
  .venv/bin/celery -A console beat --detach --pidfile "$RUN/beat.pid" --logfile "$LOG/beat.log" \
    --schedule "$RUN/celerybeat-schedule" --loglevel INFO
  echo "[console] beat started"
fi
if ! alive "$RUN/web.pid"; then
  # --capture-output: the console's own log (stderr), 500s with their tracebacks, goes to web.log
  # too; a daemon's stderr would otherwise be lost.
  .venv/bin/gunicorn console.wsgi --bind "127.0.0.1:$WEB_PORT" --workers 2 --threads 4 --daemon --no-control-socket \
    --pid "$RUN/web.pid" --access-logfile "$LOG/web-access.log" --error-logfile "$LOG/web.log" --capture-output
  echo "[console] web started"
fi
fetch() { .venv/bin/python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=3)" "$1" 2>/dev/null; }
for _ in $(seq 1 50); do fetch "http://127.0.0.1:$WEB_PORT/healthz" && break; sleep 0.2; done
fetch "http://127.0.0.1:$WEB_PORT/readyz" || { echo "console is not ready: see $LOG/web.log and http://127.0.0.1:$WEB_PORT/readyz" >&2; exit 1; }

password_note="the DEMO_PASSWORD you set"
[ -n "${DEMO_PASSWORD:-}" ] || password_note="$(.venv/bin/python -c 'from console.settings import DEMO_PASSWORD_DEFAULT as p; print(p)')"
cat <<MSG

Fleet Console is running: http://127.0.0.1:$WEB_PORT/
  logins: admin, operator, approver, viewer  (password: $password_note)
  logs:   $LOG/   stop with: make down
MSG
