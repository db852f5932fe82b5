#!/usr/bin/env bash
# Builds imagewarden's container image from its release binaries and pushes it:
#   layer 1: Debian 12's libc6, libgcc-s1 and gcc-12-base (the binaries' only shared
#            libraries) and ca-certificates (the bundle its postinst would make is
#            assembled here), unpacked from the .deb files with a dpkg status
#            database, and a passwd/group with the non-root user 65532;
#   layer 2: /usr/local/bin/imagewarden-operator, /usr/local/bin/imagewarden and a
#            sample vulnerability database index at /usr/share/imagewarden/db.idx,
#            compiled from the test records in scanner/testdata/osv and scanner/testdata/nvd
#            and marked as a sample (whoever loads it warns that it is not a real
#            database). It is not the default: the operator downloads the official
#            sources unless --db / db.sources names a database (the offline test cluster
#            names this one). IMAGEWARDEN_IMAGE_DB_SOURCE names other sources.
#
#   project-image.sh HOST:PORT/REPO:TAG
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache="${IMAGEWARDEN_CACHE:-$HOME/.cache/imagewarden}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
ref=${1:?usage: project-image.sh HOST:PORT/REPO:TAG}
debs=(libc6 libgcc-s1 gcc-12-base ca-certificates)

echo "image: building release binaries" >&2
(cd "$here" && cargo build --release --locked -q -p imagewarden-operator --bin imagewarden-operator \
  -p imagewarden-scanner --bin imagewarden)
release="$CARGO_TARGET_DIR/release"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Layer 1: the Debian base.
debdir="$cache/debs"
mkdir -p "$debdir"
for p in "${debs[@]}"; do
  if ! compgen -G "$debdir/${p}_*.deb" >/dev/null; then
    (cd "$debdir" && apt-get download -q "$p" >/dev/null 2>&1) ||
      { echo "image: apt-get download $p failed (is Debian's package mirror reachable?)" >&2; exit 1; }
  fi
done
base="$work/base"
mkdir -p "$base/var/lib/dpkg" "$base/etc" "$base/tmp"
chmod 1777 "$base/tmp"
: >"$base/var/lib/dpkg/status"
for p in "${debs[@]}"; do
  deb="$(ls "$debdir/${p}"_*.deb | head -n1)"
  dpkg-deb -x "$deb" "$base"
  dpkg-deb -f "$deb" | awk '{print} /^Package:/{print "Status: install ok installed"}' >>"$base/var/lib/dpkg/status"
  echo >>"$base/var/lib/dpkg/status"
done
# What ca-certificates' postinst (update-ca-certificates) would write: every Mozilla CA.
mkdir -p "$base/etc/ssl/certs"
cat "$base"/usr/share/ca-certificates/mozilla/*.crt >"$base/etc/ssl/certs/ca-certificates.crt"
# The release the packages come from.
cp /usr/lib/os-release "$base/etc/os-release"
cat >"$base/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/usr/sbin/nologin
nonroot:x:65532:65532:imagewarden:/home/nonroot:/usr/sbin/nologin
EOF
cat >"$base/etc/group" <<'EOF'
root:x:0:
nonroot:x:65532:
EOF
mkdir -p "$base/home/nonroot"
chown 65532:65532 "$base/home/nonroot"

# Layer 2: imagewarden.
app="$work/app"
install -D -m 0755 "$release/imagewarden-operator" "$app/usr/local/bin/imagewarden-operator"
install -D -m 0755 "$release/imagewarden" "$app/usr/local/bin/imagewarden"
mkdir -p "$app/usr/share/imagewarden"
SOURCE_DATE_EPOCH="$(git -C "$here" log -1 --format=%ct 2>/dev/null || echo 0)" \
  "$release/imagewarden" db build --sample \
  --source "${IMAGEWARDEN_IMAGE_DB_SOURCE:-$here/scanner/testdata/osv}" \
  --source "nvd:$here/scanner/testdata/nvd" \
  --out "$app/usr/share/imagewarden/db.idx" >/dev/null

digest="$("$here/tests/scripts/oci-image.sh" --rootfs "$base" --rootfs "$app" \
  --user 65532:65532 --entrypoint '["/usr/local/bin/imagewarden-operator"]' --cmd '["run"]' \
  --env PATH=/usr/local/bin:/usr/bin:/bin "$ref")"
echo "image: pushed $ref@$digest" >&2
echo "$digest"
