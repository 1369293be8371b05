#!/usr/bin/env bash
# Installs the OHIF Viewer that the demo and the browser test serve: the built dist/ of the npm
# package @ohif/app, at a pinned version and checksum, into viewer/ohif-VERSION/ (not kept in
# git), unmodified: the viewer as a site deploys it. Skips everything when that directory
# already holds this build (an earlier, patched install is replaced).
set -euo pipefail
cd "$(dirname "$0")/.."

version="3.13.2"
# The registry's sha512 of @ohif/app-3.13.2.tgz (`npm view @ohif/app@3.13.2 dist.integrity`).
integrity="sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="
dest="viewer/ohif-$version"

marker="stock $integrity"
[ "$(cat "$dest/.installed" 2>/dev/null)" = "$marker" ] && exit 0

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
rm -rf "$dest"
mkdir -p viewer
mv "$work/package/dist" "$dest"
echo "$marker" >"$dest/.installed"
