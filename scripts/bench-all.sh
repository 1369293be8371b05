#!/usr/bin/env bash
# Every benchmark of BENCHMARKS.md in one sitting at the current commit: a release build, then
# each section's command as BENCHMARKS.md gives it, one after the other, each report written
# to bench-results/<date>-<commit>/ with the machine's state (cores, memory, load) before
# each. Run it on an otherwise idle machine; it takes about half an hour on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release -p testbed -p gateway
commit=$(git rev-parse --short HEAD)
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    commit="$commit-modified"
fi
out="bench-results/$(date -u +%F)-$commit"
mkdir -p "$out"
state() {
    {
        echo "## $1"
        echo "date: $(date -u +%FT%TZ), commit: $commit, cores: $(nproc)"
        echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
        grep -E '^(MemTotal|MemAvailable):' /proc/meminfo | tr -s ' ' | paste -sd, -
    } >>"$out/machine.txt"
}
run() {
    local name=$1
    shift
    state "$name"
    echo "bench-all: $name" >&2
    "$@" 2> >(tail -n 200 >"$out/$name.log")
}
# Sections whose servers must not see each other run in network namespaces of their own
# where the machine allows it, as BENCHMARKS.md gives them.
isolated() {
    if unshare -n true 2>/dev/null; then
        unshare -n bash -c 'ip link set lo up && "$@"' isolated "$@"
    else
        "$@"
    fi
}
run retrieve target/release/bench-retrieve run --runs 5 --out "$out/retrieve.md"
run cache target/release/bench-cache --runs 5 --clients 32 --seconds 10 --out "$out/cache.md"
run cache-1gb target/release/bench-cache --slices 2000 --rss-only 32MiB --dir .testbed/bench-big --out "$out/cache-1gb.md"
run federation target/release/bench-federation --runs 10 --out "$out/federation.md"
# DICOM-RST's row needs its binary, built from its public source: DICOM_RST=/path/to/dicom-rst.
run edge target/release/bench-edge --runs 5 ${DICOM_RST:+--dicom-rst "$DICOM_RST"} --out "$out/edge.md"
run distance target/release/bench-distance --runs 3 --out "$out/distance.md"
run distance-25ms target/release/bench-distance --runs 3 --delay-ms 25 --out "$out/distance-25ms.md"
run distance-100mbit target/release/bench-distance --runs 3 --mbit 100 --out "$out/distance-100mbit.md"
run deid target/release/bench-deid --runs 5 --out "$out/deid.md"
run codecs target/release/bench-codecs --runs 3 --out "$out/codecs.md"
run replicas isolated target/release/bench-replicas --rounds 3 --out "$out/replicas.md"
run load isolated target/release/bench-load --clients 64 --seconds 60 --rounds 3 --out "$out/load.md"
run eucaim target/release/bench-eucaim --runs 50 --studies 1000 --out "$out/eucaim.md"
state "done"
echo "bench-all: reports in $out" >&2
