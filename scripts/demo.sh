#!/usr/bin/env bash
# The demo federation: three real Orthanc sites with sample data (pydicom's test files and a
# synthetic 200-slice CT), checked by the gateway. Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
echo "building (release)" >&2
cargo build --release --quiet -p testbed -p gateway

dir=".testbed/demo"
rm -rf "$dir"
mkdir -p "$dir"
target/release/testbed up --dir "$dir" --sites 3 --base-ports 11111:8142 --destination FEDGW@11200 \
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
target/release/dicomweb-gateway check --config examples/demo.toml
echo
echo "The federation's sites are up:"
for n in 1 2 3; do
    echo "  site-$n: DICOM ORTHANC$n@127.0.0.1:$((11110 + n)), Orthanc's own DICOMweb http://127.0.0.1:$((8141 + n))/dicom-web"
done
echo "The gateway's own DICOMweb endpoint (dicomweb-gateway serve) is not built yet; 'check' above"
echo "is what the gateway does with these sites today. Ctrl-C stops the sites."
wait $testbed
