#!/usr/bin/env bash
# The front-end packages the portal serves, copied into static/vendor/ (committed) from the npm
# registry at pinned versions. .ci/vendor-assets.sha256 records the SHA-256 of every file under
# static/vendor/; the running portal never fetches anything from another host, and this script
# runs only when a maintainer refreshes or upgrades a package.
#   .ci/vendor-assets.sh           download the packages again and check every file against the
#                                  recorded hashes: on any difference, stop and change nothing
#   .ci/vendor-assets.sh --update  (after changing a version below) write the new files and record
#                                  their hashes; review the manifest's diff like code
#   .ci/vendor-assets.sh --check   check the files on disk against the manifest (no network)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-verify}
manifest=.ci/vendor-assets.sha256
vendor=static/vendor

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

# "<sha256>  <path>" for every file under a folder that holds static/vendor/, sorted bytewise
# (the format of sha256sum, so `sha256sum --check .ci/vendor-assets.sha256` works too).
sums() { (cd "$1" && find "$vendor" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum); }

case $mode in
  --check)
    if ! diff -u "$manifest" <(sums .) >&2; then
      echo "vendor-assets: the files under $vendor/ differ from $manifest (lines above)" >&2
      exit 1
    fi
    echo "vendor-assets: every file under $vendor/ matches $manifest"
    exit 0
    ;;
  verify | --update) ;;
  *)
    echo "usage: $0 [--update | --check]" >&2
    exit 2
    ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
out=$work/out
for line in "${ASSETS[@]}"; do
  read -r spec file dest <<<"$line"
  (cd "$work" && npm pack --silent "$spec" >/dev/null)
  tarball=$(ls "$work"/*.tgz | head -n1)
  mkdir -p "$work/x" "$out/$(dirname "$dest")"
  tar -xzf "$tarball" -C "$work/x"
  cp "$work/x/package/$file" "$out/$dest"
  cp "$work/x/package/LICENSE" "$out/$(dirname "$dest")/LICENSE" 2>/dev/null || true
  echo "$spec $(basename "$dest") $(sha256sum "$out/$dest" | cut -d' ' -f1)" >>"$out/$(dirname "$dest")/VERSION"
  rm -rf "$work/x" "$tarball"
  echo "fetched $spec $file"
done

if [ "$mode" = verify ]; then
  # The registry must serve exactly the bytes recorded when the package was reviewed.
  if ! diff -u "$manifest" <(sums "$out") >&2; then
    echo "vendor-assets: what the registry served differs from $manifest (lines above);" \
      "$vendor/ is unchanged. After a deliberate upgrade: $0 --update" >&2
    exit 1
  fi
else
  sums "$out" >"$manifest"
  echo "recorded $(wc -l <"$manifest") hashes in $manifest"
fi
rm -rf "$vendor"
cp -a "$out/$vendor" "$vendor"
echo "$vendor/ matches $manifest"
