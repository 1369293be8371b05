#!/usr/bin/env bash
# Runs every test: unit tests, and end-to-end tests against real Orthanc and DCMTK dcmqrscp
# sites that this script starts (the test bed) and stops.
#
# Where the machine allows it, the tests run in a network namespace of their own that has
# nothing but a loopback interface, so no server of theirs is reachable from elsewhere and
# nothing they do can leave the machine (Orthanc 1.10 cannot bind its DICOM port to loopback).
set -euo pipefail
cd "$(dirname "$0")/.."

# Each phase is announced with the minutes and seconds since the start.
TEST_STARTED=$(date +%s)
export TEST_STARTED
phase() {
    local t=$(($(date +%s) - TEST_STARTED))
    printf '[%02d:%02d] %s\n' $((t / 60)) $((t % 60)) "$1" >&2
}
export -f phase

scripts/install-deps.sh
phase "building"
cargo build --workspace --all-targets --quiet
phase "checking formatting and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

run_tests() {
    set -euo pipefail
    phase "starting the test bed"
    local dir=".testbed/ci"
    rm -rf "$dir"
    mkdir -p "$dir"
    target/debug/testbed up --dir "$dir" --sites 3 --dcmqrscp --ct-slices 200 --info "$dir/testbed.json" \
        > "$dir/testbed.log" 2>&1 &
    TESTBED_PID=$!
    trap 'kill $TESTBED_PID 2>/dev/null; wait $TESTBED_PID 2>/dev/null || true' EXIT
    for _ in $(seq 1 600); do
        [ -f "$dir/testbed.json" ] && break
        if ! kill -0 $TESTBED_PID 2>/dev/null; then
            echo "the test bed failed to start:" >&2
            cat "$dir/testbed.log" >&2
            return 1
        fi
        sleep 0.5
    done
    [ -f "$dir/testbed.json" ] || { echo "the test bed did not come up in 300 s" >&2; cat "$dir/testbed.log" >&2; return 1; }
    local status=0
    export TESTBED_INFO="$PWD/$dir/testbed.json"
    phase "cargo tests"
    cargo test --workspace --offline --quiet 2>&1 | tee "$dir/cargo-test.log" || status=$?
    # The gateway as real DICOMweb clients see it (Python dicomweb-client); the slowest listed.
    phase "end-to-end tests (pytest)"
    python3 -m pytest -q -p no:cacheprovider --durations=15 tests/python 2>&1 | tee "$dir/pytest.log" || status=$?
    # One closing line over every test binary and pytest (the last cargo binary is a doc-test one).
    awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
         /(passed|failed).* in [0-9.]+s/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed,?$/) p += $(i-1); if ($i ~ /^(failed|errors?),?$/) f += $(i-1) } }
         END { printf "%d passed, %d failed\n", p, f }' "$dir/cargo-test.log" "$dir/pytest.log"
    return $status
}

if [ "${NO_NETNS:-}" != "1" ] && unshare -n true 2>/dev/null; then
    export -f run_tests
    unshare -n bash -c 'ip link set lo up && run_tests'
else
    echo "note: no private network namespace here; tests run on this machine's loopback" >&2
    run_tests
fi

# Every fuzz target for a fixed time, after the test bed is stopped (docs/FUZZING.md has the
# longer nightly run).
phase "fuzzing"
# A fixed seed: the same inputs each run, so a new finding is the code's, not chance's.
scripts/fuzz.sh --seconds "${FUZZ_SECONDS:-10}" --seed 1
phase "done"
