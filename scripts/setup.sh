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
  qemu-user-static   # runs arm64 images on an amd64 machine (binfmt_misc, registered below)
)

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# arm64 packages next to the machine's own: apt's arm64 lists and `apt-get download NAME:arm64`.
foreign_added=
if [ "$(dpkg --print-architecture)" != arm64 ] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
  as_root dpkg --add-architecture arm64
  foreign_added=1
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# deb-lock's tests read apt's package lists, of both architectures: make sure there are some.
if [ -n "$foreign_added" ] || ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1 \
  || ! ls /var/lib/apt/lists/*_binary-arm64_Packages* >/dev/null 2>&1; then
  as_root apt-get update -qq
fi

# Single-user Nix as root: make sure the store and its database exist.
if [ "$(id -u)" = 0 ] && [ ! -d /nix/var/nix/db ]; then
  NIX_CONFIG="substituters =" nix-store --init 2>/dev/null || true
fi

# Foreign binaries run through qemu: binfmt_misc mounted and the aarch64 handler registered,
# with the F flag (the interpreter is opened now, so it also works inside containers).
scripts_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
as_root "$scripts_dir/services.sh" binfmt

command -v cargo >/dev/null || { echo "setup: cargo (a Rust toolchain) is required" >&2; exit 1; }
