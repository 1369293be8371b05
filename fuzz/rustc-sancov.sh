#!/bin/sh
# RUSTC_WORKSPACE_WRAPPER of the fuzz build (scripts/fuzz.sh): the workspace's own crates are
# compiled with libFuzzer's coverage instrumentation, on the stable toolchain (the sancov pass and
# its LLVM options need no nightly flag). Cargo gives workspace crates built through a wrapper
# artifacts of their own, so dependencies are reused from the ordinary dev build as they are.
rustc="$1"
shift
exec "$rustc" "$@" \
    -Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares
