#!/usr/bin/env bash
# Install what strata's tests, example and benchmarks use on a Debian machine, and start the
# services they talk to. Safe to run again: it only installs what is missing.
#   scripts/setup.sh            # packages for the tests
#   scripts/setup.sh --bench    # also what the benchmarks measure with
set -euo pipefail

packages=(
  nix-bin            # the oracle: nix-store, nix-hash, nix-instantiate
  python3            # runs the nixpkgs reference scripts
  util-linux         # setpriv, unshare
  gzip
  libsqlite3-dev     # strata reads Nix's own database (read-only)
  dpkg-dev           # dpkg-deb builds the test packages
  libh2-java         # the example's database library
  openjdk-17-jdk-headless  # javac/jar for the Java wrapper tests
  time               # /usr/bin/time for peak memory in benchmarks
  gcc libc6-dev      # a static test program for the image tests (gcc -static)
  docker.io          # image consumers: docker load/run ...
  podman             # ... podman load/run
  skopeo             # ... skopeo inspect/copy
  umoci runc         # ... umoci unpack + runc run
  containerd         # ... ctr images import
  strace             # counts the store files mkimage opens
  docker-registry    # the registry push-image pushes to in the tests and the benchmark
  apache2-utils      # htpasswd -B for the registry's basic-auth test
  curl               # the push tests ask the registry directly
  tzdata             # the reproducibility tests build under other time zones
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# deb-lock's tests read apt's package lists: make sure there are some.
if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
  as_root apt-get update -qq
fi

# Single-user Nix as root: make sure the store and its database exist.
if [ "$(id -u)" = 0 ] && [ ! -d /nix/var/nix/db ]; then
  NIX_CONFIG="substituters =" nix-store --init 2>/dev/null || true
fi

command -v cargo >/dev/null || { echo "setup: cargo (a Rust toolchain) is required" >&2; exit 1; }
