#!/usr/bin/env bash
# Stop the Docker engine that .ci/docker-up.sh started, by the pid in its pid file; an engine it
# did not start (no pid file) is left alone.
#
#   .ci/docker-down.sh [PIDFILE]   default PIDFILE: $STSC_DOCKERD_PIDFILE or /tmp/stsc-dockerd.pid
set -euo pipefail

PIDFILE=${1:-${STSC_DOCKERD_PIDFILE:-/tmp/stsc-dockerd.pid}}
if [ ! -f "$PIDFILE" ]; then
  echo "no $PIDFILE: no engine of ours to stop"
  exit 0
fi
pid=$(cat "$PIDFILE")
if kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid"
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "dockerd $pid ignored SIGTERM for 30 s; killing it" >&2
    kill -KILL "$pid"
  fi
fi
rm -f "$PIDFILE"
echo "dockerd $pid stopped"
