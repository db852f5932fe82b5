#!/usr/bin/env bash
# Builds etcd and the Kubernetes commands pinned by tests/k8s-bin/*/go.mod, once per
# version, into ${IMAGEWARDEN_CACHE:-~/.cache/imagewarden}/k8s/<version>/bin.
# Prints that directory. Set K8S_COMPONENTS to limit what is built.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${IMAGEWARDEN_CACHE:-$HOME/.cache/imagewarden}"
k8s_version="$(awk '/^require k8s.io\/kubernetes /{print $3}' "$here/k8s-bin/kubernetes/go.mod")"
etcd_version="$(awk '/^require go.etcd.io\/etcd\/server\/v3 /{print $3}' "$here/k8s-bin/etcd/go.mod")"
out="$cache/k8s/$k8s_version-etcd$etcd_version/bin"
mkdir -p "$out"

export GOCACHE="$cache/go-build" GOMODCACHE="${GOMODCACHE:-$cache/go-mod}" GOFLAGS=-buildvcs=false CGO_ENABLED=0

components="${K8S_COMPONENTS:-kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl}"
missing=()
for c in $components; do
  [[ -x "$out/$c" ]] || missing+=("k8s.io/kubernetes/cmd/$c")
done
if ((${#missing[@]})); then
  echo "building ${missing[*]} ($k8s_version)" >&2
  start=$SECONDS
  # kubelet needs cgo for nothing we use; a static build runs anywhere on this machine.
  (cd "$here/k8s-bin/kubernetes" && go build -trimpath -ldflags "-s -w \
      -X k8s.io/component-base/version.gitVersion=$k8s_version \
      -X k8s.io/component-base/version.gitMajor=1 \
      -X k8s.io/component-base/version.gitMinor=$(echo "$k8s_version" | cut -d. -f2) \
      -X k8s.io/client-go/pkg/version.gitVersion=$k8s_version" \
      -o "$out/" "${missing[@]}")
  echo "built Kubernetes commands in $((SECONDS - start))s" >&2
fi
if [[ ! -x "$out/etcd" ]]; then
  echo "building etcd ($etcd_version)" >&2
  start=$SECONDS
  (cd "$here/k8s-bin/etcd" && go build -trimpath -ldflags "-s -w" -o "$out/etcd" .)
  echo "built etcd in $((SECONDS - start))s" >&2
fi
echo "$out"
