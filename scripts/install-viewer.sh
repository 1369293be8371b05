#!/usr/bin/env bash
# Installs the OHIF Viewer that the demo and the browser test serve: the built dist/ of the npm
# package @ohif/app, at a pinned version and checksum, into viewer/ohif-VERSION/ (not kept in
# git), with one fix to OHIF's study list (below). Skips everything when that directory is
# already complete.
set -euo pipefail
cd "$(dirname "$0")/.."

version="3.13.2"
# The registry's sha512 of @ohif/app-3.13.2.tgz (`npm view @ohif/app@3.13.2 dist.integrity`).
integrity="sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="
dest="viewer/ohif-$version"

[ -f "$dest/.installed" ] && exit 0

if ! command -v npm >/dev/null 2>&1; then
    echo "installing Debian packages: npm" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq npm >/dev/null
fi

echo "installing the OHIF Viewer (@ohif/app $version) into $dest" >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# From npm's cache when it holds the package (so a fresh checkout installs without the network).
(cd "$work" && npm pack --prefer-offline --silent "@ohif/app@$version" >/dev/null)
tarball="$work/ohif-app-$version.tgz"
actual=$(python3 -c 'import base64, hashlib, sys; print("sha512-" + base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' "$tarball")
if [ "$actual" != "$integrity" ]; then
    echo "@ohif/app $version: checksum $actual, expected $integrity" >&2
    exit 1
fi
tar -xzf "$tarball" -C "$work" package/dist
[ -f "$work/package/dist/index.html" ] || { echo "@ohif/app $version has no dist/index.html" >&2; exit 1; }
# OHIF 3.13's study list fails as a whole ("No studies available" and an error dialog) when a
# study's ModalitiesInStudy is present but empty, as PS3.18 F.2.5 encodes it: getModalities()
# reads .Value.length of it. A study whose series carry no Modality (pydicom's secondary
# capture files) has one. The one loop is guarded; anything else in the build is untouched.
python3 - "$work/package/dist" <<'PATCH'
import pathlib, sys
dist = pathlib.Path(sys.argv[1])
old = "for (let i = 0; i < ModalitiesInStudy.Value.length; i++) {"
new = "for (let i = 0; i < (ModalitiesInStudy.Value || []).length; i++) {"
hits = [f for f in dist.glob("app.bundle.*.js") if old in f.read_text()]
if len(hits) != 1 or hits[0].read_text().count(old) != 1:
    sys.exit("the OHIF build does not hold getModalities() as expected: check the patch in scripts/install-viewer.sh")
hits[0].write_text(hits[0].read_text().replace(old, new))
PATCH
rm -rf "$dest"
mkdir -p viewer
mv "$work/package/dist" "$dest"
touch "$dest/.installed"
