#!/usr/bin/env bash
# Start the container services the image tests talk to, unless they already answer:
#   scripts/services.sh docker        # dockerd --iptables=false --bridge=none, on containerd
#   scripts/services.sh containerd    # containerd on /run/containerd/containerd.sock
#   scripts/services.sh binfmt        # qemu-aarch64 registered with binfmt_misc (arm64 images)
# Idempotent and safe when several tests call it at once (one lock file). Exits non-zero, with
# one line on stderr (and the end of the daemon's log), when a service cannot be started: tests
# then fail, never skip.
#
# A daemon killed with SIGKILL (a machine's session ending, an OOM kill) leaves its socket and
# pid file behind. dockerd takes an existing /run/containerd/containerd.sock for a running
# containerd and waits on it until it gives up, so stale files are removed before a start, under
# the lock, and only when nothing answers on them.
set -euo pipefail
service=${1:?usage: services.sh docker|containerd|binfmt}
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

# The kernel runs aarch64 ELF files through qemu-user-static. Registered from the package's own
# binfmt.d file; its F flag makes the kernel open the interpreter now, so containers (which do
# not have it in their root) can use it too.
start_binfmt() {
  local misc=/proc/sys/fs/binfmt_misc conf=/usr/lib/binfmt.d/qemu-aarch64.conf
  [ "$(uname -m)" = aarch64 ] && return 0
  [ -f "$conf" ] || { echo "services: $conf is missing (install qemu-user-static: scripts/setup.sh)" >&2; exit 1; }
  if [ ! -e "$misc/register" ]; then
    mount -t binfmt_misc binfmt_misc "$misc" \
      || { echo "services: cannot mount binfmt_misc on $misc" >&2; exit 1; }
  fi
  [ -e "$misc/qemu-aarch64" ] && return 0
  cat "$conf" > "$misc/register" \
    || { echo "services: cannot register $conf with binfmt_misc" >&2; exit 1; }
}

case $service in
  docker) start_docker ;;
  containerd) start_containerd ;;
  binfmt) start_binfmt ;;
  *) echo "services: unknown service '$service' (docker, containerd or binfmt)" >&2; exit 2 ;;
esac
