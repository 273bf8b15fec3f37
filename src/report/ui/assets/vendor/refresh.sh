#!/bin/bash
# Refresh the vendored uPlot from the npm registry (no Node toolchain is needed to build runner: these
# two files are embedded in the binary as they are). Usage: src/report/ui/assets/vendor/refresh.sh [VERSION]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=${1:-1.6.32}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
curl -fsSL "https://registry.npmjs.org/uplot/-/uplot-$version.tgz" -o "$tmp/uplot.tgz"
tar xzf "$tmp/uplot.tgz" -C "$tmp"
cp "$tmp/package/dist/uPlot.iife.min.js" "$tmp/package/dist/uPlot.min.css" "$here/"
cp "$tmp/package/LICENSE" "$here/LICENSE-uPlot.txt"
echo "uplot $version (npm), dist/uPlot.iife.min.js and dist/uPlot.min.css, MIT (LICENSE-uPlot.txt)" > "$here/VERSION"
echo "vendored uplot $version into $here"
