#!/usr/bin/env bash
# Build the sandbox images without a container registry and without PyPI inside the build.
#   sandboxes/images/build.sh [IMAGE...]         IMAGE: a recipe folder here, or in
#                                                inference/images/ (the model API's engines);
#                                                default python-cpu
#   sandboxes/images/build.sh --lock [IMAGE...]  (maintainers) write IMAGE/requirements.lock: the
#                                                SHA-256 of every wheel requirements.txt names
#   sandboxes/images/build.sh --wheelhouse [IMAGE...]  only var/wheelhouse/IMAGE (no Docker): an
#                                                image that is up to date is not rebuilt, so its
#                                                wheelhouse may be missing from a fresh clone
# For each image: (1) a base image, (2) a wheelhouse downloaded on this machine for the image's
# interpreter, checked against requirements.lock, (3) `docker build` with that wheelhouse in the
# context, installed with pip --require-hashes, on top of the base's security updates. An image
# whose recipe, base and interpreter did not change is not rebuilt. See README.md here.
# Environment:
#   BASE_IMAGE     build FROM this registry image (e.g. debian:bookworm-slim); default: the local
#                  nac/base:bookworm, made with debootstrap when it is missing
#   DEBIAN_MIRROR  Debian mirror for debootstrap and the images' apt; default: the one this
#                  machine's apt uses (/etc/apt/sources.list, sources.list.d/*.list, *.sources)
#   DEBIAN_SECURITY_MIRROR  where bookworm-security comes from; default: this machine's apt's
#   IMAGE_TAG      default: the recipe's `tag` file, else 2026.11
#   IMAGE_PYTHON   interpreter the wheels are for; default 3.11.2 (Debian bookworm's python3)
#   IMAGE_GLIBC    newest manylinux glibc the wheels may need; default 2.36 (bookworm)
#   FORCE=1        rebuild even when the image is up to date
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
var=$root/var
tag=${IMAGE_TAG:-2026.11}
py_version=${IMAGE_PYTHON:-3.11.2}
glibc_minor=${IMAGE_GLIBC:-2.36}
glibc_minor=${glibc_minor#2.}
arch=$(uname -m)
local_base=nac/base:bookworm
base=${BASE_IMAGE:-$local_base}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

say() { printf '\033[1;32m==>\033[0m %s\n' "$*"; }
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }

# Wheels for the image's interpreter and libc, whatever this machine runs: every manylinux tag
# from the image's glibc down to manylinux2014 (pip does not expand one --platform itself).
platforms=()
for minor in $(seq "$glibc_minor" -1 17); do platforms+=(--platform "manylinux_2_${minor}_${arch}"); done
platforms+=(--platform "manylinux2014_${arch}" --platform "manylinux2010_${arch}" --platform "manylinux1_${arch}")

# The recipe folder of an image: the sandboxes' here, the model API's engines in
# inference/images/ (the hub never starts those; the inference package owns what it runs).
recipe_dir() {
  if [ ! -d "$here/$1" ] && [ -d "$root/inference/images/$1" ]; then
    printf '%s\n' "$root/inference/images/$1"
  else
    printf '%s\n' "$here/$1"
  fi
}

# sha256 over the recipe folder: "<sha256>  ./<path>" per file, sorted bytewise, hashed again.
# tests/sandboxes/images/test_images.py recomputes it from the same definition.
recipe_hash() {
  (cd "$(recipe_dir "$1")" && find . -type f ! -name '*.pyc' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) |
    sha256sum | cut -c1-64
}

# The Debian mirror apt on this machine uses for a suite (one-line or deb822 sources): "release"
# (bookworm, or another Debian release: one mirror serves them all) or "security"
# (bookworm-security, or another release's). Prints nothing when apt has none.
apt_mirror() {
  python3 - "$1" <<'PY'
import glob, re, sys

want = sys.argv[1]
# Debian's release names, so that a third-party repository (its own suite names) is never taken.
DEBIAN = {"bullseye", "bookworm", "trixie", "forky", "duke", "sid",
          "oldstable", "stable", "testing", "unstable"}


def fits(suite):
    if want == "security":
        return suite.endswith("-security") and suite.split("-")[0] in DEBIAN
    return suite in DEBIAN


def rank(suite):
    return 0 if suite.startswith("bookworm") else 1


def one_line(path):
    for line in open(path):
        f = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
        if len(f) >= 4 and f[0] == "deb" and fits(f[2]) and "main" in f[3:]:
            yield rank(f[2]), f[1]


def deb822(path):
    for stanza in re.split(r"\n\s*\n", open(path).read()):
        fields = {}
        for line in stanza.splitlines():
            if ":" in line and not line.startswith(("#", " ")):
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.split()
        if "deb" not in fields.get("types", []) or not fields.get("uris"):
            continue
        if fields.get("enabled", ["yes"])[0] == "no" or "main" not in fields.get("components", []):
            continue
        for suite in fields.get("suites", []):
            if fits(suite):
                yield rank(suite), fields["uris"][0]


found = []
for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
    try:
        found += one_line(path)
    except OSError:
        pass
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    found += deb822(path)
# bookworm's own entries first, then the order apt reads them in (sort is stable).
print(sorted(found, key=lambda f: f[0])[0][1] if found else "")
PY
}

# The mirrors the base and the images' apt use: the settings, else this machine's apt's.
debian_mirror=""
debian_security_mirror=""
mirrors_pick() {
  [ -z "$debian_mirror" ] || return 0
  debian_mirror=${DEBIAN_MIRROR:-$(apt_mirror release)}
  [ -n "$debian_mirror" ] ||
    die "no Debian mirror in this machine's apt sources (/etc/apt/sources.list*): set DEBIAN_MIRROR"
  debian_security_mirror=${DEBIAN_SECURITY_MIRROR:-$(apt_mirror security)}
  [ -n "$debian_security_mirror" ] ||
    say "warning: no bookworm-security in this machine's apt sources and no DEBIAN_SECURITY_MIRROR: the images get no security updates"
}

ensure_base() {
  if [ -n "${BASE_IMAGE:-}" ]; then
    docker image inspect "$base" >/dev/null 2>&1 || { say "Pulling $base"; docker pull "$base"; }
    return
  fi
  if docker image inspect "$local_base" >/dev/null 2>&1; then
    say "Base image $local_base present"
    return
  fi
  command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] ||
    die "debootstrap is missing: run .ci/system-deps.sh run"
  local mirror started rootfs log=/tmp/nac-debootstrap.log
  mirrors_pick
  mirror=$debian_mirror
  started=$(now)
  say "Base image $local_base: debootstrap --variant=minbase bookworm from $mirror (log: $log)"
  rootfs=$(mktemp -d /var/tmp/nac-base.XXXXXX)
  # shellcheck disable=SC2064  # expand now: the trap must remove this very folder
  trap "$SUDO rm -rf '$rootfs'" EXIT
  PATH=$PATH:/usr/sbin:/sbin $SUDO debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$log" 2>&1 ||
    die "debootstrap failed; see $log"
  printf 'deb %s bookworm main\ndeb %s bookworm-updates main\n' "$mirror" "$mirror" |
    $SUDO tee "$rootfs/etc/apt/sources.list" >/dev/null
  if [ -n "$debian_security_mirror" ]; then
    printf 'deb %s bookworm-security main\n' "$debian_security_mirror" |
      $SUDO tee -a "$rootfs/etc/apt/sources.list" >/dev/null
  fi
  $SUDO rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/tmp/*
  $SUDO tar -C "$rootfs" --numeric-owner -c . |
    docker import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "$local_base" >/dev/null
  $SUDO rm -rf "$rootfs"
  trap - EXIT
  say "Base image $local_base made ($(since "$started"))"
}

pip_cmd=()
pick_pip() {
  [ ${#pip_cmd[@]} -eq 0 ] || return 0
  if [ -x "$root/.venv/bin/python" ]; then
    pip_cmd=("$root/.venv/bin/python" -m pip)
  elif python3 -m pip --version >/dev/null 2>&1; then
    pip_cmd=(python3 -m pip)
  else
    [ -x "$var/images-pip/bin/python" ] || python3 -m venv "$var/images-pip"
    pip_cmd=("$var/images-pip/bin/python" -m pip)
  fi
}

# <image>/requirements.lock must exist and have been made from this requirements.txt.
lock_check() {
  local image=$1 dir lock recorded
  dir=$(recipe_dir "$1")
  lock=$dir/requirements.lock
  [ -f "$lock" ] || die "$image: no requirements.lock: run \`make images-lock IMAGES=$image\`"
  recorded=$(sed -n 's/^# requirements.txt sha256: //p' "$lock")
  [ "$recorded" = "$(sha256sum <"$dir/requirements.txt" | cut -c1-64)" ] ||
    die "$image: requirements.lock was not made from this requirements.txt: run \`make images-lock IMAGES=$image\`"
}

# (maintainers) <image>/requirements.lock: requirements.txt with the SHA-256 of each wheel, as
# the configured index gives them for the image's interpreter and platform (metadata only, no
# wheel is downloaded). Review the diff like code: it decides which bytes the images run.
lock_write() {
  local image=$1 dir req work started
  dir=$(recipe_dir "$1")
  req=$dir/requirements.txt
  [ -f "$req" ] || die "no recipe $dir (requirements.txt)"
  pick_pip
  started=$(now)
  say "$image: resolving requirements.txt for CPython $py_version on $arch to record the wheels' hashes"
  work=$(mktemp -d)
  # shellcheck disable=SC2064  # expand now: the trap must remove this very folder
  trap "rm -rf '$work'" EXIT
  "${pip_cmd[@]}" install -qq --disable-pip-version-check --dry-run --ignore-installed \
    --target "$work/target" --report "$work/report.json" \
    --only-binary=:all: --implementation cp --python-version "$py_version" "${platforms[@]}" -r "$req"
  python3 "$here/wheel_lock.py" "$work/report.json" "$req" "$dir/requirements.lock"
  rm -rf "$work"
  trap - EXIT
  say "$image: wrote ${dir#"$root"/}/requirements.lock ($(grep -c -- '--hash=' "$dir/requirements.lock") hashes, $(since "$started"))"
}

# var/wheelhouse/<image>/: every wheel requirements.lock names, for the image's interpreter,
# each checked against its recorded hash as it is downloaded.
ensure_wheelhouse() {
  local image=$1 req dir=$var/wheelhouse/$1 key started
  req=$(recipe_dir "$1")/requirements.lock
  key=$({ sha256sum <"$req"; echo "$py_version ${platforms[*]}"; } | sha256sum | cut -c1-64)
  if [ "$(cat "$dir/.complete" 2>/dev/null)" = "$key" ]; then
    say "$image: wheelhouse up to date ($(find "$dir" -name '*.whl' | wc -l) wheels)"
    return
  fi
  pick_pip
  started=$(now)
  say "$image: downloading the wheelhouse for CPython $py_version into ${dir#"$root"/}"
  rm -rf "$dir.tmp"
  mkdir -p "$dir.tmp"
  local reuse=()
  [ -d "$dir" ] && reuse=(--find-links "$dir")
  "${pip_cmd[@]}" download -qq --disable-pip-version-check --dest "$dir.tmp" \
    --only-binary=:all: --implementation cp --python-version "$py_version" "${platforms[@]}" \
    "${reuse[@]}" --require-hashes -r "$req"
  echo "$key" >"$dir.tmp/.complete"
  rm -rf "$dir"
  mv "$dir.tmp" "$dir"
  say "$image: wheelhouse ready: $(find "$dir" -name '*.whl' | wc -l) wheels, $(du -sh "$dir" | cut -f1) ($(since "$started"))"
}

build_image() {
  local image=$1 dir name image_tag rhash base_id key existing started ctx wheel
  local local_wheels=() key_parts=()
  dir=$(recipe_dir "$image")
  [ -f "$dir/Dockerfile" ] && [ -f "$dir/requirements.txt" ] ||
    die "no recipe $dir (Dockerfile + requirements.txt)"
  # A recipe's `tag` file gives its own version (the engines' differs from the sandboxes').
  image_tag=${IMAGE_TAG:-$(cat "$dir/tag" 2>/dev/null || echo "$tag")}
  name="nac/$image:$image_tag"
  lock_check "$image"
  # A recipe's executable `local-wheels` prints the paths of wheels built on this machine (an
  # sdist-only package: llama-cpp-python); they go into the context as host-wheels/, and their
  # SHA-256 into the build key, so a rebuilt wheel rebuilds the image.
  if [ -x "$dir/local-wheels" ]; then
    mapfile -t local_wheels < <("$dir/local-wheels")
    [ ${#local_wheels[@]} -gt 0 ] || die "$image: local-wheels printed no wheel"
    mapfile -t key_parts < <(sha256sum "${local_wheels[@]}" | cut -c1-64)
  fi
  rhash=$(recipe_hash "$image")
  base_id=$(docker image inspect -f '{{.Id}}' "$base")
  key=$(printf '%s\n' "$rhash" "$base" "$base_id" "$py_version" "$arch" "${key_parts[@]}" | sha256sum | cut -c1-64)
  existing=$(docker image inspect -f '{{index .Config.Labels "nac.build-key"}}' "$name" 2>/dev/null || true)
  if [ "$existing" = "$key" ] && [ -z "${FORCE:-}" ]; then
    say "$image: $name is up to date (recipe ${rhash:0:12}), not rebuilt"
    return
  fi
  ensure_wheelhouse "$image"
  started=$(now)
  say "$image: docker build $name (recipe ${rhash:0:12}, FROM $base)"
  ctx=$var/build/$image
  rm -rf "$ctx"
  mkdir -p "$ctx"
  cp -a "$dir/." "$ctx/"
  # Hard links: the wheelhouse is not copied, only linked into the context.
  cp -al "$var/wheelhouse/$image" "$ctx/wheelhouse" 2>/dev/null || cp -a "$var/wheelhouse/$image" "$ctx/wheelhouse"
  if [ ${#local_wheels[@]} -gt 0 ]; then
    mkdir -p "$ctx/host-wheels"
    for wheel in "${local_wheels[@]}"; do
      cp -l "$wheel" "$ctx/host-wheels/" 2>/dev/null || cp "$wheel" "$ctx/host-wheels/"
    done
  fi
  mirrors_pick
  # SECURITY_UPDATES_AS_OF: a rebuild on a later day upgrades again instead of reusing the
  # cached apt layer.
  docker build \
    --build-arg BASE_IMAGE="$base" --build-arg RECIPE_HASH="$rhash" --build-arg IMAGE_VERSION="$image_tag" \
    --build-arg DEBIAN_MIRROR="$debian_mirror" --build-arg DEBIAN_SECURITY_MIRROR="$debian_security_mirror" \
    --build-arg SECURITY_UPDATES_AS_OF="$(date -u +%F)" \
    --label nac.build-key="$key" --label nac.base-image="$base@$base_id" \
    --tag "$name" "$ctx"
  rm -rf "$ctx"
  # The image this one replaced (now untagged) goes; other images are left alone.
  docker image prune --force --filter "label=nac.image=$image" >/dev/null
  say "$image: built $name, $(docker image inspect -f '{{.Size}}' "$name" | awk '{ printf "%.0f MB", $1 / 1e6 }') ($(since "$started"))"
}

mode=build
case "${1:-}" in
  --lock) mode=lock && shift ;;
  --wheelhouse) mode=wheelhouse && shift ;;
esac
[ $# -gt 0 ] || set -- python-cpu
if [ "$mode" = lock ]; then
  for image in "$@"; do lock_write "$image"; done
  exit 0
fi
if [ "$mode" = wheelhouse ]; then
  for image in "$@"; do lock_check "$image" && ensure_wheelhouse "$image"; done
  exit 0
fi
total=$(now)
docker info >/dev/null 2>&1 || die "the Docker engine does not answer: run .ci/system-deps.sh run"
ensure_base
for image in "$@"; do build_image "$image"; done
say "Images ready: $* ($(since "$total"))"
