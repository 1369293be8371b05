#!/usr/bin/env bash
# The demo federation: three real Orthanc sites with sample data (pydicom's test files and a
# synthetic 200-slice CT), checked by the gateway, the gateway serving DICOMweb over them, and the
# OHIF Viewer configured for the gateway (docs/VIEWER.md). Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
# The same build as the tests' (dependencies optimised, the project's own crates not): one
# build serves both commands. `--workspace` resolves the dependencies' features over every
# crate, as the test build does; with `-p gateway` alone some resolve differently and a second
# copy of ring, rustls and what uses them would be compiled. Benchmarks use
# `cargo build --release` (BENCHMARKS.md), about twice as fast on a cold retrieval.
echo "building" >&2
cargo build --quiet --workspace --bin dicomweb-gateway --bin testbed

dir=".testbed/demo"
rm -rf "$dir"
mkdir -p "$dir"
target/debug/testbed up --dir "$dir" --sites 3 --base-ports 11111:8142 --destination FEDGW@11200 \
    --generated-destinations 0 --info "$dir/testbed.json" &
testbed=$!
trap 'kill $testbed 2>/dev/null; wait $testbed 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 1 600); do
    [ -f "$dir/testbed.json" ] && break
    kill -0 $testbed 2>/dev/null || { echo "the sites failed to start" >&2; exit 1; }
    sleep 0.5
done

echo
echo "== dicomweb-gateway check --config examples/demo.toml"
target/debug/dicomweb-gateway check --config examples/demo.toml
echo
echo "The federation's sites are up:"
for n in 1 2 3; do
    echo "  site-$n: DICOM ORTHANC$n@127.0.0.1:$((11110 + n)), Orthanc's own DICOMweb http://127.0.0.1:$((8141 + n))/dicom-web"
done
echo
target/debug/dicomweb-gateway serve --config examples/demo.toml &
gateway=$!
trap 'kill $gateway $testbed 2>/dev/null; wait $gateway $testbed 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 1 100); do
    curl -sf http://127.0.0.1:8080/healthz >/dev/null 2>&1 && break
    sleep 0.1
done
# The OHIF Viewer (installed by scripts/install-deps.sh), its DICOMweb data source the gateway.
viewer_url="http://127.0.0.1:3000"
python3 viewer/serve.py --gateway http://127.0.0.1:8080/dicom-web --listen 127.0.0.1:3000 &
viewer=$!
trap 'kill $viewer $gateway $testbed 2>/dev/null; wait $viewer $gateway $testbed 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 1 100); do
    curl -sf "$viewer_url/app-config.js" >/dev/null 2>&1 && break
    kill -0 $viewer 2>/dev/null || { echo "the viewer failed to start (is port 3000 taken?)" >&2; exit 1; }
    sleep 0.1
done
echo
echo "Point a DICOMweb viewer or client at: http://127.0.0.1:8080/dicom-web"
echo "  (it searches and retrieves over all three sites; try:"
echo "   curl 'http://127.0.0.1:8080/dicom-web/studies?ModalitiesInStudy=CT')"
echo
echo "OHIF Viewer on the gateway, de-identified studies of all three sites: $viewer_url"
echo
echo "Ctrl-C stops the viewer, the gateway and the sites."
wait $gateway
