#!/usr/bin/env bash
# Runs every check and test of imagewarden: formatting, lints, CRD freshness, unit,
# integration tests against a real Kubernetes control plane and a real registry.
# Installs what it needs (Debian packages, Go-built Kubernetes binaries cached under
# ~/.cache/imagewarden) on first use.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

export IMAGEWARDEN_CACHE="${IMAGEWARDEN_CACHE:-$HOME/.cache/imagewarden}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$IMAGEWARDEN_CACHE/target}"
export CARGO_TERM_COLOR=never
# Incremental compilation data only grows across runs; CI builds once per change.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

step() { echo "== $* ($(date -u +%H:%M:%S))"; }

step "installing test dependencies"
if [[ $(id -u) -eq 0 ]]; then
  tests/scripts/install-deps.sh
else
  sudo tests/scripts/install-deps.sh
fi

step "building Kubernetes binaries (cached)"
IMAGEWARDEN_K8S_BIN="$(tests/scripts/build-k8s.sh)"
export IMAGEWARDEN_K8S_BIN

if [[ -x tests/scripts/fetch-fixtures.sh ]]; then
  step "fetching real-package fixtures (cached)"
  IMAGEWARDEN_FIXTURES="$(tests/scripts/fetch-fixtures.sh)"
  export IMAGEWARDEN_FIXTURES
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "starting the single-node test cluster (kubelet, containerd, registry, imagewarden image)"
if [[ $(id -u) -ne 0 ]]; then
  echo "the end-to-end tests need root (containerd, kubelet, network set-up)" >&2
  exit 1
fi
trap 'tests/scripts/cluster.sh down || true' EXIT
tests/scripts/cluster.sh up

step "cargo test"
cargo test --workspace --locked --no-fail-fast -- --test-threads="${TEST_THREADS:-4}"
step "done"
