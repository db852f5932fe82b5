#!/usr/bin/env bash
# Package inventory side by side with the peers (issue 19): imagewarden, Syft and Trivy on
# the same images in the same run, paired round by round, under /usr/bin/time.
#
#   bench/peers.sh [IMAGEWARDEN_BINARY] [RUNS]
#
# - Syft and Trivy are built from Go modules at the versions pinned below, once, into
#   ${IMAGEWARDEN_CACHE:-~/.cache/imagewarden}/peers/bin-{syft,trivy} (Trivy needs
#   GOEXPERIMENT=jsonv2 with Go 1.26).
# - The images are built once into .../peers/images with debootstrap from Debian's mirror
#   (installed with apt-get when missing): a Debian 11 minbase root in one gzip layer, and
#   a bookworm root with Python, Perl, gcc, git, curl, OpenSSL, Node.js, npm and a JRE in
#   three gzip layers (usr/, var/, the rest), each saved as a docker-archive. Set
#   PEERS_IMAGES to a space-separated list of docker-archive files to use others instead.
# - Each round runs the three tools on an image in turn, RUNS rounds (default 3), so that a
#   busy spell of the machine hits all alike; the table has the medians of wall and CPU
#   seconds and of peak RSS, the ratios of each peer to imagewarden, and the packages each
#   found by ecosystem (purl type); then the packages one tool lists and another does not.
# Trivy's databases cannot be downloaded here: it runs offline, SBOM only, with an in-memory
# cache (no layer reuse between runs).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
iw="${1:-$target_dir/release/imagewarden}"
runs="${2:-3}"
[[ -x $iw ]] || { echo "no CLI at $iw: cargo build --release -p imagewarden-scanner" >&2; exit 2; }
cache="${IMAGEWARDEN_CACHE:-$HOME/.cache/imagewarden}/peers"
syft_version=v1.57.1
trivy_version=v0.74.0
mkdir -p "$cache"

# Builds `cmd` of Go module `module` at `version` into $cache/bin-<name> unless the binary
# there already is that version.
build_peer() {
  local name=$1 module=$2 cmd=$3 version=$4
  shift 4
  local bin="$cache/bin-$name/$name"
  if [[ -x $bin ]] && go version -m "$bin" | grep -qE "^\s+mod\s+$module\s+$version\s"; then
    return
  fi
  echo "building $name $version" >&2
  mkdir -p "$cache/bin-$name"
  env GOBIN="$cache/bin-$name" GOFLAGS=-buildvcs=false \
    GOMODCACHE="${GOMODCACHE:-$cache/../go-mod}" GOCACHE="$cache/../go-build" "$@" \
    go install "$module/$cmd@$version" 2>"$cache/$name-build.log"
}
command -v go >/dev/null || { echo "Go is needed to build Syft and Trivy" >&2; exit 2; }
build_peer syft github.com/anchore/syft cmd/syft $syft_version
build_peer trivy github.com/aquasecurity/trivy cmd/trivy $trivy_version GOEXPERIMENT=jsonv2
syft="$cache/bin-syft/syft"
trivy="$cache/bin-trivy/trivy"

# Writes a docker-archive: $1 the archive, $2 the image's name, then one directory or
# `dir:path...` list per layer, each given as a file listing the paths (relative to the
# root $ROOTFS) that go in that layer.
save_archive() {
  python3 - "$@" <<'PY'
import gzip, hashlib, io, json, os, shutil, subprocess, sys, tarfile, tempfile
archive, name, rootfs, *lists = sys.argv[1:]
work = tempfile.mkdtemp(dir=os.path.dirname(archive))
layers, diff_ids = [], []
for i, listing in enumerate(lists):
    tar_path = os.path.join(work, f"layer{i}.tar")
    # GNU tar keeps owners, modes, hard links and special files as an image build does.
    subprocess.run(["tar", "--numeric-owner", "--xattrs", "-C", rootfs, "-cf", tar_path,
                    "--no-recursion", "-T", listing], check=True)
    h = hashlib.sha256()
    with open(tar_path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    diff_ids.append("sha256:" + h.hexdigest())
    subprocess.run(["gzip", "-6", "-n", tar_path], check=True)
    layers.append(f"layer{i}.tar.gz")
config = json.dumps({"architecture": "amd64", "os": "linux",
    "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
    "rootfs": {"type": "layers", "diff_ids": diff_ids},
    "history": [{"created_by": "debootstrap"} for _ in diff_ids]}).encode()
config_name = hashlib.sha256(config).hexdigest() + ".json"
with open(os.path.join(work, config_name), "wb") as f:
    f.write(config)
with open(os.path.join(work, "manifest.json"), "w") as f:
    json.dump([{"Config": config_name, "RepoTags": [name], "Layers": layers}], f)
subprocess.run(["tar", "-C", work, "-cf", archive + ".part", "manifest.json", config_name, *layers],
               check=True)
os.rename(archive + ".part", archive)
shutil.rmtree(work)
PY
}

# Builds a root with debootstrap into $cache/images/rootfs-$1 ($2 suite, $3 includes).
debootstrap_root() {
  local name=$1 suite=$2 include=$3 dir="$cache/images/rootfs-$1"
  if ! command -v debootstrap >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  [[ -f $dir/.complete ]] && return
  rm -rf "$dir"
  echo "debootstrap $suite ($name)" >&2
  # bookworm's npm fails to configure inside debootstrap; its files are unpacked all the
  # same and the image is taken as it is (dpkg lists npm as unpacked).
  debootstrap --variant=minbase ${include:+--include=$include} "$suite" "$dir" \
    http://deb.debian.org/debian >"$cache/images/debootstrap-$name.log" 2>&1 || true
  [[ -s $dir/var/lib/dpkg/status ]] || { echo "debootstrap $suite failed: $cache/images/debootstrap-$name.log" >&2; exit 1; }
  touch "$dir/.complete"
}

# Paths of a root (relative, sorted) into one listing file per layer: the prefixes given,
# then the rest.
split_layers() {
  local dir=$1 out=$2
  shift 2
  (cd "$dir" && find . -mindepth 1 ! -name .complete | sed 's|^\./||' | LC_ALL=C sort) >"$out.all"
  local rest="$out.all" i=0
  for prefix in "$@"; do
    grep -E "^$prefix(/|$)" "$rest" >"$out.$i" || true
    grep -vE "^$prefix(/|$)" "$rest" >"$out.rest" || true
    mv "$out.rest" "$out.remaining"
    rest="$out.remaining"
    i=$((i + 1))
  done
  mv "$rest" "$out.$i"
}

images=()
if [[ -n ${PEERS_IMAGES:-} ]]; then
  read -r -a images <<<"$PEERS_IMAGES"
else
  mkdir -p "$cache/images"
  debian11="$cache/images/debian11-minbase.tar"
  if [[ ! -f $debian11 ]]; then
    debootstrap_root debian11 bullseye ""
    split_layers "$cache/images/rootfs-debian11" "$cache/images/debian11.list"
    save_archive "$debian11" debian11-minbase:bench "$cache/images/rootfs-debian11" "$cache/images/debian11.list.0"
  fi
  bookworm="$cache/images/bookworm-dev.tar"
  if [[ ! -f $bookworm ]]; then
    debootstrap_root bookworm bookworm python3,python3-pip,perl,gcc,g++,make,git,curl,openssl,libssl-dev,nodejs,npm,default-jre-headless
    split_layers "$cache/images/rootfs-bookworm" "$cache/images/bookworm.list" usr var
    save_archive "$bookworm" bookworm-dev:bench "$cache/images/rootfs-bookworm" \
      "$cache/images/bookworm.list.0" "$cache/images/bookworm.list.1" "$cache/images/bookworm.list.2"
  fi
  images=("$debian11" "$bookworm")
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
export NO_COLOR=1 SYFT_CHECK_FOR_APP_UPDATE=false TRIVY_DISABLE_VEX_NOTICE=true
# One tool's command line for image $2, writing its package list to $3.
tool_cmd() {
  case $1 in
    imagewarden) echo "$iw inventory docker-archive:$2 --format cyclonedx --output $3" ;;
    syft) echo "$syft scan docker-archive:$2 -q -o cyclonedx-json=$3" ;;
    # The jars (the JRE's and ca-certificates-java's) would need the Java database, which cannot be downloaded here.
    trivy) echo "$trivy image --input $2 --format cyclonedx --output $3 --offline-scan --skip-db-update --skip-java-db-update --cache-backend memory --skip-dirs usr/lib/jvm --skip-dirs usr/share/ca-certificates-java --quiet" ;;
  esac
}
tools=(imagewarden syft trivy)
median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

echo "machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
echo "imagewarden $("$iw" --version | awk '{print $2}'), syft $syft_version, trivy $trivy_version, $runs rounds"
for image in "${images[@]}"; do
  base="$(basename "$image" .tar)"
  for ((r = 0; r < runs; r++)); do
    for t in "${tools[@]}"; do
      read -r -a argv <<<"$(tool_cmd "$t" "$image" "$out/$base.$t.json")"
      /usr/bin/time -f '%e %U %S %M' -o "$out/time" "${argv[@]}" >/dev/null 2>"$out/$base.$t.err" ||
        { echo "$t failed on $base:" >&2; tail -n 5 "$out/$base.$t.err" >&2; exit 1; }
      tail -n 1 "$out/time" >>"$out/$base.$t.times"
    done
  done
  echo "load average after $base: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
done

echo
printf '%-26s %-12s %8s %8s %9s %7s %7s %9s  %s\n' image tool "wall s" "CPU s" "RSS MiB" "wall×" "CPU×" "packages" "by ecosystem (purl type)"
for image in "${images[@]}"; do
  base="$(basename "$image" .tar)"
  size="$(du -m "$image" | cut -f1)"
  for t in "${tools[@]}"; do
    f="$out/$base.$t.times"
    wall=$(awk '{print $1}' "$f" | median)
    cpu=$(awk '{print $2 + $3}' "$f" | median)
    rss=$(awk '{print $4 / 1024}' "$f" | median)
    echo "$wall $cpu" >"$out/$base.$t.med"
    read -r iw_wall iw_cpu <"$out/$base.imagewarden.med"
    counts="$(python3 - "$out/$base.$t.json" <<'PY'
import collections, json, sys
doc = json.load(open(sys.argv[1]))
seen = set()
def walk(cs):
    for c in cs or []:
        purl = c.get("purl")
        if purl:
            seen.add(purl.split("?")[0])
        walk(c.get("components"))
walk(doc.get("components"))
by = collections.Counter(p[4:].split("/")[0] for p in seen)
print(len(seen), " ".join(f"{k} {v}" for k, v in sorted(by.items())))
PY
)"
    printf '%-26s %-12s %8.2f %8.2f %9.1f %7.2f %7.2f %9s  %s\n' "$base (${size} MB)" "$t" "$wall" "$cpu" "$rss" \
      "$(echo "$wall / $iw_wall" | bc -l)" "$(echo "$cpu / $iw_cpu" | bc -l)" "${counts%% *}" "${counts#* }"
  done
done

echo
echo "packages one tool lists and imagewarden does not (purl type/name, versions aside), and the reverse:"
for image in "${images[@]}"; do
  base="$(basename "$image" .tar)"
  python3 - "$base" "$out/$base".{imagewarden,syft,trivy}.json <<'PY'
import json, sys
from urllib.parse import unquote
base, *files = sys.argv[1:]
def names(path):
    out = set()
    def walk(cs):
        for c in cs or []:
            purl = c.get("purl")
            if purl:
                # pkg:type/namespace/name@version?qualifiers: compare type and name only.
                p = unquote(purl.split("?")[0].split("@")[0][4:])
                kind, _, rest = p.partition("/")
                out.add(f"{kind}/{rest.rsplit('/', 1)[-1]}")
            walk(c.get("components"))
    walk(json.load(open(path)).get("components"))
    return out
iw, syft, trivy = (names(f) for f in files)
for peer, other in (("syft", syft), ("trivy", trivy)):
    for label, diff in ((f"{peer} only", other - iw), (f"imagewarden, not {peer}", iw - other)):
        shown = sorted(diff)
        print(f"{base}: {label} ({len(shown)}): {' '.join(shown[:40])}{' …' if len(shown) > 40 else ''}")
PY
done
