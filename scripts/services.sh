#!/usr/bin/env bash
# Start the container services the image tests talk to, unless they already answer:
#   scripts/services.sh docker        # dockerd --iptables=false --bridge=none, on containerd
#   scripts/services.sh containerd    # containerd on /run/containerd/containerd.sock
# Idempotent and safe when several tests call it at once (one lock file). Exits non-zero, with
# one line on stderr (and the end of the daemon's log), when a service cannot be started: tests
# then fail, never skip.
#
# A daemon killed with SIGKILL (a machine's session ending, an OOM kill) leaves its socket and
# pid file behind. dockerd takes an existing /run/containerd/containerd.sock for a running
# containerd and waits on it until it gives up, so stale files are removed before a start, under
# the lock, and only when nothing answers on them.
set -euo pipefail
service=${1:?usage: services.sh docker|containerd}
mkdir -p /run/strata
exec 9>/run/strata/services.lock
# The daemons started below must not inherit the lock (9>&-), or it is never released.
flock -w 180 9

containerd_sock=/run/containerd/containerd.sock

wait_for() { # NAME PID CHECK-COMMAND...
  local name=$1 pid=$2; shift 2
  for _ in $(seq 240); do
    "$@" >/dev/null 2>&1 && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "services: $name exited while starting (see /run/strata/$name.log):" >&2
      tail -n 5 "/run/strata/$name.log" >&2
      exit 1
    fi
    sleep 0.25
  done
  echo "services: $name did not come up in 60 s (see /run/strata/$name.log):" >&2
  tail -n 5 "/run/strata/$name.log" >&2
  exit 1
}

start_containerd() {
  command -v containerd >/dev/null || { echo "services: containerd is not installed (scripts/setup.sh)" >&2; exit 1; }
  ctr --address "$containerd_sock" version >/dev/null 2>&1 && return 0
  pkill -x containerd 2>/dev/null && sleep 1 || true
  rm -f "$containerd_sock" "$containerd_sock.ttrpc"
  setsid nohup containerd >/run/strata/containerd.log 2>&1 < /dev/null 9>&- &
  wait_for containerd $! ctr --address "$containerd_sock" version
}

start_docker() {
  command -v dockerd >/dev/null || { echo "services: dockerd is not installed (scripts/setup.sh)" >&2; exit 1; }
  docker version >/dev/null 2>&1 && return 0
  start_containerd
  pkill -x dockerd 2>/dev/null && sleep 1 || true
  rm -f /var/run/docker.pid /var/run/docker.sock
  setsid nohup dockerd --iptables=false --bridge=none --containerd="$containerd_sock" \
    >/run/strata/docker.log 2>&1 < /dev/null 9>&- &
  wait_for docker $! docker version
}

case $service in
  docker) start_docker ;;
  containerd) start_containerd ;;
  *) echo "services: unknown service '$service' (docker or containerd)" >&2; exit 2 ;;
esac
