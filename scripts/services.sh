#!/usr/bin/env bash
# Start the container services the image tests talk to, unless they already answer:
#   scripts/services.sh docker        # dockerd --iptables=false --bridge=none
#   scripts/services.sh containerd    # containerd on /run/containerd/containerd.sock
# Idempotent and safe when several tests call it at once (one lock file). Exits non-zero, with
# one line on stderr, when a service cannot be started: tests then fail, never skip.
set -euo pipefail
service=${1:?usage: services.sh docker|containerd}
mkdir -p /run/strata
exec 9>/run/strata/services.lock
# The daemons started below must not inherit the lock (9>&-), or it is never released.
flock -w 120 9

wait_for() { # NAME CHECK-COMMAND...
  local name=$1; shift
  for _ in $(seq 120); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "services: $name did not come up (see /run/strata/$name.log)" >&2
  exit 1
}

case $service in
  docker)
    command -v dockerd >/dev/null || { echo "services: dockerd is not installed (scripts/setup.sh)" >&2; exit 1; }
    docker version >/dev/null 2>&1 && exit 0
    setsid nohup dockerd --iptables=false --bridge=none >/run/strata/docker.log 2>&1 < /dev/null 9>&- &
    wait_for docker docker version
    ;;
  containerd)
    command -v containerd >/dev/null || { echo "services: containerd is not installed (scripts/setup.sh)" >&2; exit 1; }
    ctr version >/dev/null 2>&1 && exit 0
    setsid nohup containerd >/run/strata/containerd.log 2>&1 < /dev/null 9>&- &
    wait_for containerd ctr version
    ;;
  *) echo "services: unknown service '$service' (docker or containerd)" >&2; exit 2 ;;
esac
