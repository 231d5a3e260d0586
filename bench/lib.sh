# Shared by the benchmarks (sourced, not run): timing, interleaving, medians and spread, and the
# JSON record `make bench` gathers into bench/results/summary.json.
#
# A benchmark names each measured command ("side") and lets `interleave` run them in turns,
# A B C A B C …, the same number of times, each after the same preparation (`sync` and the
# warm-up the benchmark gives), so that every side sees the same machine load and cache state.
# Wall times are taken with bash's $EPOCHREALTIME around the bare command: no timer process
# starts inside the measured interval.
#
#   bench_init NAME                     work dir in $work, samples under $work/samples
#   side NAME COMMAND...                declare a side (run through `eval`, in the caller's shell)
#   interleave RUNS PREPARE SIDE...     run the sides in turns; PREPARE (a command) before each
#                                       (in BENCH_PASSES passes, each after a `turn`, see below)
#   stats SIDE                          "median min max runs" of its wall times
#   record FIGURE OURS PEER [ANCHOR...] append a figure (JSON) to bench/results/NAME.jsonl
#   show FIGURE OURS PEER [ANCHOR...]   print the figure's line of the human table
# A side's samples may carry a second time (e.g. through `sync`): `side_then NAME COMMAND` runs
# COMMAND after each timed run of NAME and records the time to its end as NAME+then.
#
# Run counts: BENCH_RUNS (default 9) for sides that take a second or more, BENCH_QUICK_RUNS
# (default 21) for figures whose sides take well under a second or so: a handful of runs of a
# quick command gives a spread too narrow to hold the machine's drift between two runs of
# `make bench`. Both sides of a figure always get the same count.
#
# Fresh targets, removal at the end: nothing is deleted before or between timed runs. Each run
# writes into a target of its own (store root, copy, registry storage, output dir), and the work
# dirs are removed only when everything is measured (`bench_done`; under bench/run.sh, at the
# very end of `make bench`). The reason: on ext4 without a journal, allocating an inode skips
# every inode freed in the last 60 s, or 360 s while its inode table block is dirty (which new
# files in the same block make it), reading each one's deletion time; after 10 000 files were
# removed, every new file pays close to a millisecond, more than the work measured (still 12x
# the time to create 10 000 files 75 s after the removal, on the development machine).
# `settle` waits that window out once before a bench's first timed run when a removal of bench
# files happened shortly before (the clean-up of a previous bench run).
#   bench_done                          remove $work (and the store paths and docker images listed
#                                       in $work/nix-paths and $work/docker-images)
#                                       now, or leave it to bench/run.sh's end
#   settle                              wait until the last removal is BENCH_SETTLE (360) s old
#
# Passes: a figure's runs spread over the whole `make bench`. A figure's runs taken within a minute
# give a spread that holds the noise of that minute, not the machine's drift over the 20 minutes
# or so a `make bench` takes (a fixed computation, `openssl speed`, moved by 3 % between two
# runs, and every figure with it). Under bench/run.sh the benchmarks take turns, one running
# at a time: each makes BENCH_PASSES passes (run.sh's default 3), every figure's runs split among
# them, and at the start of each pass hands the machine back to run.sh, which gives it to the
# next benchmark in turn. A figure's runs then sample the beginning, the middle and the end
# of the whole run, and its min-max says how far the machine moved in that time. A benchmark run
# on its own makes one pass.
#   pass_runs PASS RUNS                 the numbers (from 1) of the runs of RUNS in pass PASS
#   interleave_pass PASS RUNS PREPARE SIDE...  the runs of `interleave` in pass PASS
#   turn                                wait for the benchmark's turn (under run.sh), then (as
#                                       root) sync, empty the page cache and compact memory, and
#                                       run the benchmark's `on_turn` warm-up if it defines one

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_RESULTS=${BENCH_RESULTS:-$BENCH_ROOT/bench/results}
BENCH_RUNS=${BENCH_RUNS:-9}
BENCH_QUICK_RUNS=${BENCH_QUICK_RUNS:-21}
# When the last removal of bench work dirs ended (epoch seconds), for `settle`.
BENCH_REMOVED_STAMP=${BENCH_REMOVED_STAMP:-/var/tmp/strata-bench.removed}

declare -A _side_cmd _side_then _side_bytes

bench_init() {
    BENCH_NAME=$1
    mkdir -p "$BENCH_RESULTS"
    # Under bench/run.sh, BENCH_WORK holds every bench's work dir until the end.
    work=$(mktemp -d "${BENCH_WORK:-/var/tmp}/strata-bench-$1.XXXXXX")
    mkdir -p "$work/samples"
    : > "$BENCH_RESULTS/$BENCH_NAME.jsonl"
}

# bench_remove DIR: the store paths DIR/nix-paths lists deleted, the docker images
# DIR/docker-images names removed, DIR removed, the file system synced, and, when it held over
# 1000 files (a few do not slow anything measurable), the time noted for `settle`.
bench_remove() {
    local dir=$1 files
    [ -d "$dir" ] || return 0
    files=$(find "$dir" -xdev 2>/dev/null | head -n 1001 | wc -l) || true
    cat "$dir"/nix-paths "$dir"/*/nix-paths 2>/dev/null | xargs -r nix-store --delete >/dev/null 2>&1 || true
    cat "$dir"/docker-images "$dir"/*/docker-images 2>/dev/null | xargs -r docker rmi -f >/dev/null 2>&1 || true
    chmod -R u+w "$dir" 2>/dev/null || true
    rm -rf "$dir"
    sync
    if [ "$files" -gt 1000 ]; then _stamp_now; fi
}

# The stamp lives in /var/tmp, where anyone may have put something by that name first: it is
# replaced by rename (never written through a symlink), and `settle` reads only a plain file
# of ours holding digits (its text goes into shell arithmetic).
_stamp_now() {
    local tmp
    tmp=$(mktemp "$BENCH_REMOVED_STAMP.XXXXXX") || return 0
    date +%s > "$tmp" && mv -fT "$tmp" "$BENCH_REMOVED_STAMP" || rm -f "$tmp"
}
_stamp_last() {
    local last=0 stamp=$BENCH_REMOVED_STAMP
    if [ -f "$stamp" ] && [ ! -L "$stamp" ] && [ -O "$stamp" ]; then
        last=$(head -c 20 "$stamp")
    fi
    case $last in '' | *[!0-9]*) last=0 ;; esac
    echo "$last"
}

# bench_done: $work removed, unless bench/run.sh removes every work dir at its end.
bench_done() {
    [ -n "${BENCH_WORK:-}" ] || bench_remove "$work"
}

# settle: before a bench's first timed run, the window in which freed inodes slow allocation
# waited out, if a removal ended less than BENCH_SETTLE seconds ago.
settle() {
    local last now left settle=${BENCH_SETTLE:-360}
    last=$(_stamp_last)
    now=$(date +%s)
    left=$((last + settle - now))
    if [ "$left" -gt "$settle" ]; then left=$settle; fi
    if [ "$left" -gt 0 ]; then
        echo "bench/$BENCH_NAME: waiting ${left} s (files removed just before; see bench/lib.sh)" >&2
        sleep "$left"
    fi
}

# fresh_memory: as root, dirty pages written and the page cache emptied: the files earlier
# benches keep until the end (some 20 GB) would otherwise fill it, and every write of a timed run
# would first have to reclaim pages (mkimage's image-from-store runs spread from 0.8 to 1.8 s
# that way, against 0.65-0.7 s with memory free). Free memory compacted too, so that a run
# asking for huge pages (mklayers' large inputs) finds them without compacting on its own.
# Each timed run's warm-up reads its inputs back in.
#
# Benchmarks whose runs write or allocate hundreds of MB (the adds, mkimage's cache builds,
# mklayers on 100 000 paths) call it before every run, not only once a pass, and then read back
# both sides' inputs and tools. What was seen on the development machine (a VM whose balloon
# reports free pages to its host): `cp -a` of the store-add tree took 0.33-0.37 s or 1.8-2.0 s
# (all of it system time) in one series, slow once earlier runs had filled several GB of page
# cache, and mklayers on 100 000 paths 0.21 s or 0.30-0.36 s; from emptied caches eight copies
# in a row took 0.36-0.41 s and mklayers 0.22-0.24 s. First writes to 2 GiB of fresh memory
# took 6.0 s, the same again right after 1.9 s. The likely cause: memory handed back to the
# host costs a host fault per page when written again; which memory a run gets depends on
# what the runs before it left.
fresh_memory() {
    sync
    if [ -w /proc/sys/vm/drop_caches ]; then echo 3 > /proc/sys/vm/drop_caches; fi
    if [ -w /proc/sys/vm/compact_memory ]; then echo 1 > /proc/sys/vm/compact_memory; fi
}

BENCH_PASSES=${BENCH_PASSES:-1}
# Under bench/run.sh: two FIFOs, one to say "ready for a pass" (or, from run.sh's wrapper,
# "exit STATUS"), one to be told "go". Opened once; if run.sh goes away, the read sees the end
# of the file and the benchmark exits (its traps clean up).
if [ -n "${BENCH_TURN_GO:-}" ]; then
    exec {_turn_go}<"$BENCH_TURN_GO" {_turn_ready}>"$BENCH_TURN_READY"
fi

pass_runs() {
    local pass=$1 runs=$2
    seq $(((pass - 1) * runs / BENCH_PASSES + 1)) $((pass * runs / BENCH_PASSES))
}

turn() {
    if [ -n "${_turn_go:-}" ]; then
        echo ready >&"$_turn_ready"
        read -r _ <&"$_turn_go" || exit 1
    fi
    fresh_memory
    if declare -F on_turn > /dev/null; then on_turn; fi
}

side() {
    local name=$1
    shift
    _side_cmd[$name]="$*"
    : > "$work/samples/$name"
}

side_then() {
    _side_then[$1]=$2
    : > "$work/samples/$1+then"
}

# side_bytes SIDE BYTES: the bytes one run processes (for a throughput in the summary).
side_bytes() { _side_bytes[$1]=$2; }

# time_once SIDE: one timed run of SIDE, its wall time appended to its samples.
time_once() {
    local name=$1 start end then
    start=$EPOCHREALTIME
    eval "${_side_cmd[$name]}"
    end=$EPOCHREALTIME
    awk -v a="$start" -v b="$end" 'BEGIN { printf "%.6f\n", b - a }' >> "$work/samples/$name"
    if [ -n "${_side_then[$name]:-}" ]; then
        eval "${_side_then[$name]}"
        then=$EPOCHREALTIME
        awk -v a="$start" -v b="$then" 'BEGIN { printf "%.6f\n", b - a }' >> "$work/samples/$name+then"
    fi
}

# untimed_round PREPARE SIDE...: each side run once, untimed, after PREPARE: a warm-up (in an
# `on_turn`) where the sides' inputs are more than the benchmark's own warm-up reads back.
untimed_round() {
    local prepare=$1 s
    shift
    for s in "$@"; do
        eval "$prepare"
        eval "${_side_cmd[$s]}"
    done
}

interleave_pass() {
    local pass=$1 runs=$2 prepare=$3 s
    shift 3
    for _ in $(pass_runs "$pass" "$runs"); do
        for s in "$@"; do
            eval "$prepare"
            time_once "$s"
        done
    done
}

interleave() {
    local runs=$1 pass
    shift
    for pass in $(seq "$BENCH_PASSES"); do
        turn
        interleave_pass "$pass" "$runs" "$@"
    done
}

stats() {
    sort -g "$work/samples/$1" | awk '{ t[NR] = $1 } END {
        if (NR == 0) { print "0 0 0 0"; exit }
        m = NR % 2 ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2
        printf "%.4f %.4f %.4f %d\n", m, t[1], t[NR], NR }'
}

# _side_json SIDE: {"name":…, "median":…, "min":…, "max":…, "runs":…[, "bytes":…], "samples": […]}
# (the samples in the order they were taken: pass after pass)
_side_json() {
    local median min max runs bytes=${_side_bytes[$1]:-}
    read -r median min max runs < <(stats "$1")
    printf '{"name": "%s", "command": %s, "median": %s, "min": %s, "max": %s, "runs": %s%s, "samples": [%s]}' \
        "$1" "$(_json_string "${_side_cmd[${1%+then}]:-}")" "$median" "$min" "$max" "$runs" \
        "${bytes:+, \"bytes\": $bytes}" "$(paste -sd, "$work/samples/$1")"
}

_json_string() { python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }

# record FIGURE OURS PEER [ANCHOR...]: PEER may be "-" (strata alone).
record() {
    local figure=$1 ours=$2 peer=$3 a anchors=""
    shift 3
    for a in "$@"; do anchors+="${anchors:+, }$(_side_json "$a")"; done
    {
        printf '{"bench": "%s", "figure": %s, "strata": %s' \
            "$BENCH_NAME" "$(_json_string "$figure")" "$(_side_json "$ours")"
        if [ "$peer" != - ]; then
            printf ', "peer": %s' "$(_side_json "$peer")"
        fi
        printf ', "anchors": [%s], "cpus": %s, "loadavg": "%s"}\n' \
            "$anchors" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
    } >> "$BENCH_RESULTS/$BENCH_NAME.jsonl"
    show "$figure" "$ours" "$peer" "$@"
}

# show FIGURE OURS PEER [ANCHOR...]: medians and spread of each, the ratio strata / peer.
show() {
    local figure=$1 ours=$2 peer=$3 s median min max runs
    shift 3
    echo "  $figure"
    for s in "$ours" "$peer" "$@"; do
        [ "$s" = - ] && continue
        read -r median min max runs < <(stats "$s")
        local rate=""
        if [ -n "${_side_bytes[$s]:-}" ]; then
            rate=$(awk -v b="${_side_bytes[$s]}" -v t="$median" 'BEGIN { printf "  %.2f GiB/s", b / t / 2^30 }')
        fi
        local role=anchor
        [ "$s" = "$ours" ] && role=strata
        [ "$s" = "$peer" ] && role=peer
        printf '    %-7s %-34s median %8.3f s  (%.3f–%.3f, %d runs)%s\n' \
            "$role" "$s" "$median" "$min" "$max" "$runs" "$rate"
    done
    if [ "$peer" != - ]; then
        awk -v a="$(stats "$ours" | cut -d' ' -f1)" -v b="$(stats "$peer" | cut -d' ' -f1)" \
            'BEGIN { if (b > 0) printf "    ratio strata / peer (medians): %.2f\n", a / b }'
    fi
}

# The machine, beside every bench's table.
machine() {
    echo "  ($(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg))"
}

# copy_example DEST: the example's sources copied to DEST, without its build dir (which a
# `make example` on this machine fills with some 1300 files): copying and then removing those
# would free that many inodes just before the timed runs (see above).
copy_example() {
  mkdir -p "$1"
  tar -C "$BENCH_ROOT/examples/agatha" --exclude=./build -cf - . | tar -C "$1" -xf -
}

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# A fresh docker-registry: sets PORT_NAME and PID_NAME and adds the PID to the caller's `pids`
# array (for its clean-up). Its storage is STORAGE (default $work/NAME-storage), which must not
# exist yet: a registry per run gets a dir of its own rather than the last one's emptied.
start_registry() { # NAME [STORAGE]
  local name=$1 storage=${2:-$work/$1-storage} port; port=$(free_port)
  [ ! -e "$storage" ] || { echo "bench: $storage exists (each registry needs a fresh one)" >&2; return 1; }
  cat > "$work/$name.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $storage
http:
  addr: 127.0.0.1:$port
YML
  docker-registry serve "$work/$name.yml" > "$work/$name.log" 2>&1 &
  pids+=($!)
  eval "PID_$name=$!"
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
  eval "PORT_$name=$port"
}
