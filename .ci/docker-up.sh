#!/usr/bin/env bash
# Start a Docker engine for the sandbox tests and build the task image, without any registry.
#
#   .ci/docker-up.sh [PIDFILE]     default PIDFILE: $STSC_DOCKERD_PIDFILE or /tmp/stsc-dockerd.pid
#
# 1. Installs what is missing with apt-get (needs root): docker.io (engine), debootstrap (the
#    image's base file system), bubblewrap (the local backend's isolation).
# 2. Starts dockerd in the background unless an engine already answers; writes its pid to PIDFILE
#    and its log next to it (PIDFILE with .log), and waits until it answers.
# 3. Builds the task image: `python -m stsc.sandbox.image` (idempotent; the debootstrap tarball is
#    cached under ~/.cache/stsc).
# Stop the engine with .ci/docker-down.sh [PIDFILE]. Run the Docker tests with STSC_REQUIRE_DOCKER=1
# so that an engine that failed to start fails them instead of skipping them.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
PIDFILE=${1:-${STSC_DOCKERD_PIDFILE:-/tmp/stsc-dockerd.pid}}
LOG=${PIDFILE%.pid}.log

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
if ((${#missing[@]})); then
  echo "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

answers() { docker info >/dev/null 2>&1; }

if answers; then
  echo "a Docker engine already answers; using it"
else
  dockerd >"$LOG" 2>&1 &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 120); do
    answers && break
    kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break
    sleep 0.5
  done
  if ! answers; then
    echo "dockerd did not answer; last lines of $LOG:" >&2
    tail -n 30 "$LOG" >&2 || true
    exit 1
  fi
  echo "dockerd $(cat "$PIDFILE") answers (log: $LOG)"
fi

cd "$ROOT"
"$PY" -m stsc.sandbox.image
