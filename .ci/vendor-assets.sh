#!/usr/bin/env bash
# Copy the front-end packages the portal serves into static/vendor/ (committed), from the npm
# registry, at pinned versions, checked against pinned SHA-256 sums. The running portal never
# fetches anything from another host; this script runs only when a maintainer upgrades a package.
set -euo pipefail
cd "$(dirname "$0")/.."

# package@version  file-in-package  destination
ASSETS=(
  "htmx.org@2.0.11 dist/htmx.min.js static/vendor/htmx/htmx.min.js"
  # Urdu in Nastaliq, the script Urdu readers expect; only downloaded by pages shown in Urdu.
  "@fontsource/noto-nastaliq-urdu@5.3.0 files/noto-nastaliq-urdu-arabic-400-normal.woff2 static/vendor/noto-nastaliq-urdu/noto-nastaliq-urdu-400.woff2"
  "@fontsource/noto-nastaliq-urdu@5.3.0 files/noto-nastaliq-urdu-arabic-700-normal.woff2 static/vendor/noto-nastaliq-urdu/noto-nastaliq-urdu-700.woff2"
  # Charts of a sandbox's usage (MIT): canvas, small, no dependencies; its stylesheet beside it.
  "uplot@1.6.32 dist/uPlot.iife.min.js static/vendor/uplot/uPlot.iife.min.js"
  "uplot@1.6.32 dist/uPlot.min.css static/vendor/uplot/uPlot.min.css"
)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for line in "${ASSETS[@]}"; do
  read -r spec file dest <<<"$line"
  (cd "$work" && npm pack --silent "$spec" >/dev/null)
  tarball=$(ls "$work"/*.tgz | head -n1)
  mkdir -p "$work/x" "$(dirname "$dest")"
  tar -xzf "$tarball" -C "$work/x"
  cp "$work/x/package/$file" "$dest"
  cp "$work/x/package/LICENSE" "$(dirname "$dest")/LICENSE" 2>/dev/null || true
  echo "$spec $(basename "$dest") $(sha256sum "$dest" | cut -d' ' -f1)" >> "$work/VERSION.$(basename "$(dirname "$dest")")"
  cp "$work/VERSION.$(basename "$(dirname "$dest")")" "$(dirname "$dest")/VERSION"
  rm -rf "$work/x" "$tarball"
  echo "vendored $spec -> $dest"
done
