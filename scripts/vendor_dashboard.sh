#!/usr/bin/env bash
# Vendor the dashboard's charting library (Vega, Vega-Lite, vega-embed) from the npm registry
# into tutor/dashboard/static/vendor/, so that the dashboard works offline and references no
# external URL. The vendored files are committed (a wheel built from a clean clone carries
# them); this script refreshes them when the pinned versions change. Pinned versions; each tarball is checked against its pinned
# sha512 integrity before anything is copied. Idempotent: does nothing when the files are
# there at the pinned versions (--force re-fetches). Needs node's npm.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=tutor/dashboard/static/vendor
# name version sha512-integrity (as `npm view NAME@VERSION dist.integrity` prints it)
PACKAGES=(
    "vega 5.33.1 sha512-1fArfVDUqVbb5z8n+/nVQb+VNBzx8svY6CrsyTK4Ujm4yrd9I1auoKxBAPXLCavY1LcrbHUskQbGUP8gXOzyQw=="
    "vega-lite 5.23.0 sha512-l4J6+AWE3DIjvovEoHl2LdtCUkfm4zs8Xxx7INwZEAv+XVb6kR6vIN1gt3t2gN2gs/y4DYTs/RPoTeYAuEg6mA=="
    "vega-embed 6.29.0 sha512-PmlshTLtLFLgWtF/b23T1OwX53AugJ9RZ3qPE2c01VFAbgt3/GSNI/etzA/GzdrkceXFma+FDHNXUppKuM0U6Q=="
)
STAMP="$DEST/VERSIONS"
want=$(for p in "${PACKAGES[@]}"; do set -- $p; echo "$1@$2"; done)

if [ "${1:-}" != "--force" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
    && [ -f "$DEST/vega.min.js" ] && [ -f "$DEST/vega-lite.min.js" ] \
    && [ -f "$DEST/vega-embed.min.js" ]; then
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "vendor_dashboard.sh: npm not found; install Node.js (npm) to vendor the dashboard's" \
        "charting library" >&2
    exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
stage="$tmp/vendor"
mkdir -p "$stage"
licences="$stage/LICENSES.txt"
: >"$licences"
for p in "${PACKAGES[@]}"; do
    set -- $p
    name=$1 version=$2 integrity=$3
    (cd "$tmp" && npm pack --silent "$name@$version" >/dev/null)
    tgz="$tmp/$name-$version.tgz"
    got=$(node -e "const c = require('crypto'), fs = require('fs');
console.log('sha512-' + c.createHash('sha512').update(fs.readFileSync(process.argv[1]))
    .digest('base64'))" "$tgz")
    if [ "$got" != "$integrity" ]; then
        echo "vendor_dashboard.sh: $name@$version integrity mismatch: $got != $integrity" >&2
        exit 1
    fi
    mkdir -p "$tmp/$name"
    tar xzf "$tgz" -C "$tmp/$name"
    cp "$tmp/$name/package/build/$name.min.js" "$stage/$name.min.js"
    licence=$(node -e "console.log(require('$tmp/$name/package/package.json').license)")
    {
        echo "==== $name@$version ($licence) - https://www.npmjs.com/package/$name"
        if [ -f "$tmp/$name/package/LICENSE" ]; then
            cat "$tmp/$name/package/LICENSE"
        else
            # vega's npm package ships no LICENSE file; its licence is BSD-3-Clause with the
            # same holder and text as vega-lite's LICENSE below.
            echo "(no LICENSE file in the npm package; licence field: $licence, holder:" \
                "University of Washington Interactive Data Lab; same text as vega-lite's)"
        fi
        echo
    } >>"$licences"
done
echo "$want" >"$stage/VERSIONS"
mkdir -p "$(dirname "$DEST")"
rm -rf "$DEST"
mv "$stage" "$DEST"
echo "vendored $(echo $want) into $DEST"
