#!/usr/bin/env bash
# Builds etcd, the Kubernetes commands and helm pinned by tests/k8s-bin/*/go.mod, once per
# version, into ${IMAGEWARDEN_CACHE:-~/.cache/imagewarden}/k8s/<version>/bin.
# Prints that directory. Set K8S_COMPONENTS to limit what is built (helm included).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${IMAGEWARDEN_CACHE:-$HOME/.cache/imagewarden}"
k8s_version="$(awk '/^require k8s.io\/kubernetes /{print $3}' "$here/k8s-bin/kubernetes/go.mod")"
etcd_version="$(awk '/^require go.etcd.io\/etcd\/server\/v3 /{print $3}' "$here/k8s-bin/etcd/go.mod")"
out="$cache/k8s/$k8s_version-etcd$etcd_version/bin"
mkdir -p "$out"

export GOCACHE="$cache/go-build" GOMODCACHE="${GOMODCACHE:-$cache/go-mod}" GOFLAGS=-buildvcs=false CGO_ENABLED=0

components="${K8S_COMPONENTS:-kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl helm}"
missing=()
want_helm=false
for c in $components; do
  if [[ $c == helm ]]; then
    want_helm=true
    continue
  fi
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
if $want_helm; then
  helm_version="$(awk '/^require helm.sh\/helm\/v3 /{print $3}' "$here/k8s-bin/helm/go.mod")"
  # The directory is named after the Kubernetes and etcd versions: rebuild helm when its pin moved.
  if [[ ! -x "$out/helm" || "$("$out/helm" version --template '{{.Version}}' 2>/dev/null)" != "$helm_version" ]]; then
    echo "building helm ($helm_version)" >&2
    start=$SECONDS
    # Like helm's Makefile: the version, and the Kubernetes version of its client modules
    # as the default capabilities of `helm template` and `helm lint`.
    k8s_minor="$(awk '/^\tk8s.io\/client-go /{print $2}' "$here/k8s-bin/helm/go.mod" | cut -d. -f2)"
    (cd "$here/k8s-bin/helm" && go build -trimpath -ldflags "-s -w \
        -X helm.sh/helm/v3/internal/version.version=$helm_version \
        -X helm.sh/helm/v3/internal/version.gitTreeState=clean \
        -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 \
        -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$k8s_minor \
        -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
        -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$k8s_minor" \
        -o "$out/helm" helm.sh/helm/v3/cmd/helm)
    echo "built helm in $((SECONDS - start))s" >&2
  fi
fi
echo "$out"
