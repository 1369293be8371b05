#!/usr/bin/env bash
# Builds the fuzz targets (libFuzzer, stable toolchain, no sanitizer) and runs each for a fixed
# time over its committed corpus. Exits non-zero on the first crash, hang (-timeout) or memory
# blow-up (-rss_limit_mb / -malloc_limit_mb), printing the reproducer's path.
#
#   scripts/fuzz.sh [--seconds N] [--seed S] [target...]   (all targets, 20 s each, random seed)
#
# The workspace's crates are instrumented through RUSTC_WORKSPACE_WRAPPER (fuzz/rustc-sancov.sh),
# so the dependencies of the ordinary dev build are reused as they are. docs/FUZZING.md has the
# longer nightly run, and how a crash becomes a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."

all_targets=(qido_query media_types multipart part10 dimse jwt eucaim_query origin_json)
seconds=20
seed=0
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --seconds=*) seconds="${1#*=}"; shift ;;
        --seed) seed="$2"; shift 2 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
    [[ " ${all_targets[*]} " == *" $t "* ]] || { echo "unknown fuzz target $t (targets: ${all_targets[*]})" >&2; exit 2; }
done

# The largest input each target is given: a Part-10 file or a multipart body needs room, a query
# string or a header does not.
max_len() {
    case "$1" in
        part10|multipart|dimse) echo 65536 ;;
        jwt) echo 20000 ;;
        *) echo 8192 ;;
    esac
}

echo "building fuzz targets: ${targets[*]}" >&2
bin_args=()
for t in "${targets[@]}"; do bin_args+=(--bin "$t"); done
build_log=target/fuzz/build.json
mkdir -p target/fuzz
RUSTC_WORKSPACE_WRAPPER="$PWD/fuzz/rustc-sancov.sh" \
    cargo build --quiet -p dicomweb-fuzz --features libfuzzer "${bin_args[@]}" \
    --message-format=json-render-diagnostics > "$build_log" || { echo "the fuzz build failed" >&2; exit 1; }

status=0
for t in "${targets[@]}"; do
    exe=$(grep -o "\"executable\":\"[^\"]*/$t\"" "$build_log" | tail -1 | cut -d'"' -f4 || true)
    [ -x "$exe" ] || { echo "no executable for fuzz target $t" >&2; exit 1; }
    work="target/fuzz/corpus/$t"
    artifacts="target/fuzz/artifacts/$t"
    mkdir -p "$work" "$artifacts"
    echo "fuzzing $t for ${seconds}s" >&2
    # New inputs go to the work corpus; the committed corpus is read only.
    if "$exe" -max_total_time="$seconds" -seed="$seed" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
        -max_len="$(max_len "$t")" -print_final_stats=1 \
        -artifact_prefix="$artifacts/" "$work" "fuzz/corpus/$t" > "target/fuzz/$t.log" 2>&1; then
        grep -h "stat::number_of_executed_units\|stat::peak_rss_mb" "target/fuzz/$t.log" | sed "s/^/  $t /" >&2 || true
    else
        status=1
        echo "FUZZ FINDING in $t: the last lines of target/fuzz/$t.log:" >&2
        tail -n 40 "target/fuzz/$t.log" >&2
        for found in "$artifacts"/*; do
            [ -e "$found" ] || continue
            echo "reproducer: $found  (replay: $exe $found)" >&2
        done
    fi
done
exit $status
