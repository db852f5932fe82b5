#!/usr/bin/env bash
# Downloads real packages that the inventory fixture tests build images from, into
# ${IMAGEWARDEN_CACHE:-$HOME/.cache/imagewarden}/fixtures. Each fixture is fetched once;
# delete its directory to fetch it again. Progress goes to stderr; the only line on stdout
# is the fixture directory, so that callers can capture it. Then run the tests with
#   IMAGEWARDEN_FIXTURES=<that directory> cargo test -p imagewarden-scanner --test inventory_fixtures
set -euo pipefail

DEST="${IMAGEWARDEN_CACHE:-$HOME/.cache/imagewarden}/fixtures"
mkdir -p "$DEST"
echo "fixtures: $DEST" >&2

fetch() { # name command...
    local name=$1
    shift
    if [ -e "$DEST/$name/.done" ]; then
        echo "  $name: present" >&2
        return
    fi
    echo "  $name: fetching" >&2
    rm -rf "$DEST/$name"
    mkdir -p "$DEST/$name"
    ( cd "$DEST/$name" && "$@" ) >&2
    touch "$DEST/$name/.done"
}

pypi() {
    # Django 3.2.0 as a wheel; PyYAML 5.3 has no Linux wheel on PyPI, so its sdist.
    pip download --quiet --no-deps --only-binary=:all: --dest . "Django==3.2.0"
    pip download --quiet --no-deps --no-binary=:all: --dest . "PyYAML==5.3"
    ls Django-3.2-py3-none-any.whl PyYAML-5.3.tar.gz >/dev/null
}

npm_packages() {
    npm pack --silent lodash@4.17.15 >/dev/null
    ls lodash-4.17.15.tgz >/dev/null
}

maven() {
    mvn --batch-mode --quiet dependency:copy \
        -Dartifact=org.apache.logging.log4j:log4j-core:2.14.1:jar \
        -DoutputDirectory="$PWD"
    ls log4j-core-2.14.1.jar >/dev/null
}

go_binary() {
    # A tiny program pinned to golang.org/x/text v0.3.5 (affected by GO-2021-0113).
    local src
    src=$(mktemp -d)
    cat >"$src/go.mod" <<'MOD'
module example.com/textfixture

go 1.18

require golang.org/x/text v0.3.5
MOD
    cat >"$src/main.go" <<'GO'
package main

import (
	"fmt"

	"golang.org/x/text/language"
)

func main() {
	fmt.Println(language.MustParse("en-US"))
}
GO
    local out=$PWD
    ( cd "$src" && GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1 && \
        GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -o "$out/textfixture" . )
    rm -rf "$src"
    test -x textfixture
}

rust_auditable() {
    # A Rust binary with its dependency list embedded by cargo-auditable, pinned to
    # smallvec 1.6.0 (affected by RUSTSEC-2021-0003).
    local work
    work=$(mktemp -d)
    cargo install --quiet --locked --root "$work/tool" cargo-auditable
    mkdir -p "$work/crate/src"
    cat >"$work/crate/Cargo.toml" <<'TOML'
[package]
name = "auditable-fixture"
version = "0.1.0"
edition = "2021"

[dependencies]
smallvec = "=1.6.0"

[workspace]
TOML
    cat >"$work/crate/src/main.rs" <<'RS'
fn main() {
    let v: smallvec::SmallVec<[u8; 4]> = smallvec::smallvec![1, 2, 3];
    println!("{}", v.len());
}
RS
    local out=$PWD
    ( cd "$work/crate" && PATH="$work/tool/bin:$PATH" CARGO_TARGET_DIR="$work/target" \
        cargo auditable build --quiet --release )
    cp "$work/target/release/auditable-fixture" "$out/"
    rm -rf "$work"
    test -x auditable-fixture
}

debian_node_modules() {
    # Debian's Node.js modules as dpkg leaves them: node-semver configured (`install ok
    # installed`), node-lodash and node-lru-cache only unpacked (`install ok unpacked`),
    # with dpkg's status, file lists and the modules under usr/share/nodejs, made by the
    # real dpkg from the real packages.
    apt-get download node-lodash=4.17.21+dfsg+~cs8.31.198.20210220-9+deb12u1 \
        node-semver=7.3.5+~7.3.9-2 node-lru-cache=7.14.1-1 2>/dev/null
    mkdir -p root/var/lib/dpkg/info root/var/lib/dpkg/updates
    touch root/var/lib/dpkg/status
    local dpkg=(dpkg --root="$PWD/root" --force-depends --force-script-chrootless)
    "${dpkg[@]}" --unpack node-lodash_*.deb node-semver_*.deb node-lru-cache_*.deb
    "${dpkg[@]}" --configure node-semver
    rm -f root/var/lib/dpkg/status-old root/var/lib/dpkg/*-old
    grep -q "Status: install ok unpacked" root/var/lib/dpkg/status
    test -f root/usr/share/nodejs/lodash/package.json
}

debian_security_repo() {
    # A slice of Debian's bookworm-security archive as Debian publishes it: the signed
    # InRelease, the main/binary-amd64 Packages index it names (checked here by its SHA256),
    # the security builds of expat's binaries from the pool, and the older builds of
    # bookworm's main archive with a root made by the real dpkg from them (what an image
    # built before the security update holds). The fix tests serve the archive slice over
    # HTTP and patch an image made from the root.
    local mirror=http://deb.debian.org/debian-security suite=bookworm-security
    mkdir -p "archive/dists/$suite/main/binary-amd64" old
    curl -fsS -o "archive/dists/$suite/InRelease" "$mirror/dists/$suite/InRelease"
    curl -fsS -o Packages.xz "$mirror/dists/$suite/main/binary-amd64/Packages.xz"
    xz -dc Packages.xz >"archive/dists/$suite/main/binary-amd64/Packages"
    rm Packages.xz
    local want
    want=$(awk '$3 == "main/binary-amd64/Packages" { print $1; exit }' \
        <(sed -n '/^SHA256:/,/^[^ ]/p' "archive/dists/$suite/InRelease"))
    echo "$want  archive/dists/$suite/main/binary-amd64/Packages" | sha256sum -c --quiet
    local pkg file
    for pkg in libexpat1 expat; do
        file=$(awk -v p="$pkg" '$1 == "Package:" { cur = $2 } cur == p && $1 == "Filename:" { print $2; exit }' \
            "archive/dists/$suite/main/binary-amd64/Packages")
        mkdir -p "archive/$(dirname "$file")"
        curl -fsS -o "archive/$file" "$mirror/$file"
    done
    ( cd old && apt-get download libexpat1/bookworm expat/bookworm libc6/bookworm \
        debian-archive-keyring/bookworm 2>/dev/null )
    mkdir -p root/var/lib/dpkg/info root/var/lib/dpkg/updates
    touch root/var/lib/dpkg/status
    # libc6's maintainer scripts need a chroot: it is recorded the way dpkg records an
    # unpacked package, from its own control fields and file list, without running them.
    local libc6=(old/libc6_*.deb)
    dpkg-deb -x "${libc6[0]}" root
    { dpkg-deb -f "${libc6[0]}" | awk '{ print } /^Package:/ { print "Status: install ok installed" }'
      echo; } >root/var/lib/dpkg/status
    dpkg-deb --fsys-tarfile "${libc6[0]}" | tar -t | sed -e 's|^\./|/|' -e 's|/$||' -e 's|^$|/.|' \
        >root/var/lib/dpkg/info/libc6:amd64.list
    dpkg-deb --ctrl-tarfile "${libc6[0]}" | tar -xO ./md5sums >root/var/lib/dpkg/info/libc6:amd64.md5sums
    local dpkg=(dpkg --root="$PWD/root" --force-depends --force-script-chrootless)
    "${dpkg[@]}" --unpack old/libexpat1_*.deb old/expat_*.deb
    "${dpkg[@]}" --configure libexpat1 expat
    # The image's own apt keyring, as the keyring package ships it.
    dpkg-deb -x old/debian-archive-keyring_*.deb root
    rm -f root/var/lib/dpkg/*-old
    grep -q "Package: libexpat1" root/var/lib/dpkg/status
}

fetch pypi pypi
fetch npm npm_packages
fetch maven maven
fetch go go_binary
fetch rust rust_auditable
fetch debian-node debian_node_modules
fetch debian-security debian_security_repo
echo "$DEST"
