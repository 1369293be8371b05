#!/bin/sh
# RUSTC_WORKSPACE_WRAPPER of the fuzz build (scripts/fuzz.sh): the workspace's own crates are
# compiled with libFuzzer's coverage instrumentation, on the stable toolchain (the sancov pass and
# its LLVM options need no nightly flag). Cargo gives workspace crates built through a wrapper
# artifacts of their own, so dependencies are reused from the ordinary dev build as they are.
rustc="$1"
shift
# Build scripts (crates htj2k and ocr have one) run at build time, outside any fuzzer: they are
# compiled plain, or they would not link without libFuzzer's runtime.
case " $* " in
    *" --crate-name build_script_build "*) exec "$rustc" "$@" ;;
esac
exec "$rustc" "$@" \
    -Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares
