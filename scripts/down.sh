#!/usr/bin/env bash
# Stops everything `make up` started: web, beat, the two workers, then the local fleet.
set -uo pipefail
cd "$(dirname "$0")/.."
FLEET_DIR=${FLEET_DIR:-.fleet}
RUN="$FLEET_DIR/run"

stop() {
  local pidfile="$RUN/$1.pid"
  [ -f "$pidfile" ] || return 0
  local pid; pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    echo "[console] $1 stopped"
  fi
  rm -f "$pidfile"
}
stop web
stop beat
stop worker
stop monitor-worker
[ -x .venv/bin/python ] && PY=.venv/bin/python || PY=python3
$PY scripts/localfleet.py down --root "$FLEET_DIR"
