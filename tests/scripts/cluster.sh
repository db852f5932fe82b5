#!/usr/bin/env bash
# A real single-node Kubernetes cluster on this machine, for the end-to-end tests and
# for a local demo: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kubelet on Debian's containerd + runc, Debian's CNI plugins (bridge, host-local,
# loopback, portmap) and kube-proxy (iptables), plus an OCI registry (Debian's
# docker-registry) that holds the pause image and imagewarden's own image, both
# assembled here from binaries (no Docker daemon, no public registry).
#
#   tests/scripts/cluster.sh up       start everything (idempotent); prints the kubeconfig path
#   tests/scripts/cluster.sh down     stop everything and remove the node's network set-up
#   tests/scripts/cluster.sh status   show what runs
#   tests/scripts/cluster.sh env      print shell exports (KUBECONFIG, PATH, registry address)
#   tests/scripts/cluster.sh images   rebuild and push the imagewarden image (after code changes)
#
# Needs root. Everything lives on a private address (IMAGEWARDEN_NODE_IP, 10.200.0.1 on
# the Pods' bridge), reachable from the host and from Pods, and in one state directory
# (IMAGEWARDEN_CLUSTER_DIR, default ~/.cache/imagewarden/cluster).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache="${IMAGEWARDEN_CACHE:-$HOME/.cache/imagewarden}"
state="${IMAGEWARDEN_CLUSTER_DIR:-$cache/cluster}"
node_ip="${IMAGEWARDEN_NODE_IP:-10.200.0.1}"
node_name="${IMAGEWARDEN_NODE_NAME:-imagewarden-node}"
pod_cidr="10.244.0.0/24"
pod_gateway="10.244.0.1"
service_cidr="10.96.0.0/16"
bridge="iw-cni0"
registry="$node_ip:5000"
api="https://$node_ip:6443"
version="$(awk -F'"' '/^version = /{print $2; exit}' "$here/Cargo.toml")"
image="$registry/imagewarden/imagewarden:$version"
pause_image="$registry/imagewarden/pause:3.10"

log() { echo "cluster: $*" >&2; }
die() {
  echo "cluster: error: $*" >&2
  exit 1
}

k8s_bin() {
  if [[ -z "${IMAGEWARDEN_K8S_BIN:-}" ]]; then
    IMAGEWARDEN_K8S_BIN="$("$here/tests/scripts/build-k8s.sh")"
  fi
  echo "$IMAGEWARDEN_K8S_BIN"
}

# --- processes --------------------------------------------------------------------

running() {
  local pidfile="$state/run/$1.pid"
  [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

start() {
  local name=$1
  shift
  if running "$name"; then
    return
  fi
  mkdir -p "$state/run" "$state/logs"
  setsid "$@" >>"$state/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$state/run/$name.pid"
}

stop() {
  local name=$1 pidfile="$state/run/$1.pid"
  [[ -f $pidfile ]] || return 0
  local pid
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

# wait_for NAME SECONDS COMMAND...: runs COMMAND until it succeeds; on timeout shows the log.
wait_for() {
  local name=$1 secs=$2
  shift 2
  for _ in $(seq $((secs * 5))); do
    if "$@" >/dev/null 2>&1; then
      return 0
    fi
    if [[ -f "$state/run/$name.pid" ]] && ! running "$name"; then
      tail -n 40 "$state/logs/$name.log" >&2 || true
      die "$name exited (log: $state/logs/$name.log)"
    fi
    sleep 0.2
  done
  tail -n 40 "$state/logs/$name.log" >&2 || true
  die "$name not ready after ${secs}s (log: $state/logs/$name.log)"
}

# write_if_changed FILE: writes standard input to FILE unless FILE already holds it
# (running components watch their configuration files).
write_if_changed() {
  local tmp
  tmp="$(mktemp "$1.XXXXXX")"
  cat >"$tmp"
  if [[ -f $1 ]] && cmp -s "$tmp" "$1"; then
    rm -f "$tmp"
  else
    mv "$tmp" "$1"
  fi
}

# --- PKI --------------------------------------------------------------------------

# cert NAME SUBJECT [SAN]: an ECDSA key and a certificate signed by the cluster CA.
cert() {
  local name=$1 subject=$2 san=${3:-} pki="$state/pki"
  [[ -f "$pki/$name.crt" ]] && return
  openssl ecparam -name prime256v1 -genkey -noout -out "$pki/$name.key" 2>/dev/null
  openssl req -new -key "$pki/$name.key" -subj "$subject" -out "$pki/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [[ -n $san ]]; then
      echo "extendedKeyUsage=serverAuth,clientAuth"
      echo "subjectAltName=$san"
    else
      echo "extendedKeyUsage=clientAuth"
    fi
  } >"$pki/$name.ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 3650 -sha256 -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr" "$pki/$name.ext"
}

kubeconfig() {
  local name=$1 file="$state/$1.kubeconfig"
  [[ -f $file ]] && return
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: imagewarden
  cluster:
    server: $api
    certificate-authority: $state/pki/ca.crt
users:
- name: $name
  user:
    client-certificate: $state/pki/$name.crt
    client-key: $state/pki/$name.key
contexts:
- name: imagewarden
  context: {cluster: imagewarden, user: $name}
current-context: imagewarden
EOF
}

pki() {
  local pki="$state/pki"
  mkdir -p "$pki"
  chmod 700 "$pki"
  if [[ ! -f "$pki/ca.crt" ]]; then
    openssl ecparam -name prime256v1 -genkey -noout -out "$pki/ca.key" 2>/dev/null
    openssl req -x509 -new -key "$pki/ca.key" -subj "/CN=imagewarden-cluster-ca" -days 3650 \
      -sha256 -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" -out "$pki/ca.crt" 2>/dev/null
  fi
  if [[ ! -f "$pki/sa.key" ]]; then
    openssl ecparam -name prime256v1 -genkey -noout -out "$pki/sa.key" 2>/dev/null
    openssl ec -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  fi
  cert apiserver "/CN=kube-apiserver" \
    "IP:$node_ip,IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert admin "/O=system:masters/CN=imagewarden-admin"
  cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  cert kube-controller-manager "/CN=system:kube-controller-manager"
  cert kube-scheduler "/CN=system:kube-scheduler"
  cert kube-proxy "/CN=system:kube-proxy"
  cert kubelet "/O=system:nodes/CN=system:node:$node_name"
  cert kubelet-serving "/CN=$node_name" "IP:$node_ip,DNS:$node_name"
  for c in admin kube-controller-manager kube-scheduler kube-proxy kubelet; do
    kubeconfig "$c"
  done
}

# --- network ----------------------------------------------------------------------

network_up() {
  sysctl -qw net.ipv4.ip_forward=1
  sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || modprobe br_netfilter 2>/dev/null || true
  sysctl -qw net.bridge.bridge-nf-call-iptables=1
  # The Pods' bridge exists before the first Pod and also carries the node's own
  # address, so the node is reachable from the host and from Pods, and Service traffic
  # from the host has a local route (never the machine's default route).
  if ! ip link show "$bridge" >/dev/null 2>&1; then
    ip link add "$bridge" type bridge
  fi
  # A bridge whose address was never set takes the lowest address of its ports, so it
  # changes when a Pod's veth comes or goes; Pods then send to a gateway address nobody
  # answers (in both directions: the node cannot reach them either) until their ARP entry
  # expires. Setting it once pins it, as the CNI bridge plugin does for bridges it makes.
  ip link set "$bridge" address "$(cat "/sys/class/net/$bridge/address")"
  ip addr replace "$pod_gateway/24" dev "$bridge"
  ip addr replace "$node_ip/32" dev "$bridge"
  ip link set "$bridge" up
  ip route replace "$service_cidr" dev "$bridge" src "$node_ip"
  confinement_up
  mkdir -p "$state/cni/net.d"
  cat >"$state/cni/net.d/10-imagewarden.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "imagewarden",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$pod_cidr", "gateway": "$pod_gateway"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$state/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
}

# Nothing from the Pod or Service ranges is forwarded to any interface but the cluster's
# own bridge: Pods reach the node and each other, never the machine's other networks or
# beyond. The rules live in the mangle table, which kube-proxy leaves alone, in a chain of
# their own (removed by `down`).
confine_chain="IMAGEWARDEN-CONFINE"

confinement_rules() {
  echo "-s $pod_cidr ! -o $bridge -j DROP"
  echo "-s $service_cidr ! -o $bridge -j DROP"
}

confinement_up() {
  local rule
  iptables -w -t mangle -N "$confine_chain" 2>/dev/null || true
  iptables -w -t mangle -F "$confine_chain"
  while read -r rule; do
    # shellcheck disable=SC2086
    iptables -w -t mangle -A "$confine_chain" $rule
  done < <(confinement_rules)
  iptables -w -t mangle -C FORWARD -j "$confine_chain" 2>/dev/null ||
    iptables -w -t mangle -I FORWARD 1 -j "$confine_chain"
}

confinement_down() {
  command -v iptables >/dev/null || return 0
  while iptables -w -t mangle -D FORWARD -j "$confine_chain" 2>/dev/null; do :; done
  iptables -w -t mangle -F "$confine_chain" 2>/dev/null || true
  iptables -w -t mangle -X "$confine_chain" 2>/dev/null || true
}

# Exits 0 when every confinement rule is in place (read-only).
confinement_check() {
  local rule missing=0
  if ! iptables -w -t mangle -C FORWARD -j "$confine_chain" 2>/dev/null; then
    echo "missing: -t mangle FORWARD -j $confine_chain" >&2
    missing=1
  fi
  while read -r rule; do
    # shellcheck disable=SC2086
    if ! iptables -w -t mangle -C "$confine_chain" $rule 2>/dev/null; then
      echo "missing: -t mangle $confine_chain $rule" >&2
      missing=1
    fi
  done < <(confinement_rules)
  return "$missing"
}

# Proves the rules' effect without the cluster and without traffic beyond this machine:
# scratch network namespaces for a node (the bridge, forwarding on), a Pod on the bridge
# and an "outside" network on another interface. The Pod reaches the outside without the
# rules, only the node with them, and the outside again once they are removed.
confinement_selftest() {
  local p="iwc$$" node pod out
  node="$p-node" pod="$p-pod" out="$p-out"
  local listeners=()
  # shellcheck disable=SC2317
  cleanup_selftest() {
    trap - RETURN EXIT
    kill "${listeners[@]}" 2>/dev/null || true
    for n in "$node" "$pod" "$out"; do ip netns del "$n" 2>/dev/null || true; done
  }
  trap cleanup_selftest RETURN EXIT
  for n in "$node" "$pod" "$out"; do
    ip netns add "$n"
    ip -n "$n" link set lo up
  done
  ip -n "$node" link add "$bridge" type bridge
  ip -n "$node" addr add "$pod_gateway/24" dev "$bridge"
  ip -n "$node" link set "$bridge" up
  ip link add "$p-a" type veth peer name "$p-b"
  ip link set "$p-a" netns "$pod"
  ip link set "$p-b" netns "$node"
  ip -n "$pod" link set "$p-a" name eth0
  ip -n "$pod" addr add "${pod_cidr%.*/*}.5/24" dev eth0
  ip -n "$pod" link set eth0 up
  ip -n "$pod" route add default via "$pod_gateway"
  ip -n "$node" link set "$p-b" master "$bridge"
  ip -n "$node" link set "$p-b" up
  ip link add "$p-c" type veth peer name "$p-d"
  ip link set "$p-c" netns "$node"
  ip link set "$p-d" netns "$out"
  ip -n "$node" addr add 192.0.2.1/24 dev "$p-c"
  ip -n "$node" link set "$p-c" up
  ip -n "$out" addr add 192.0.2.2/24 dev "$p-d"
  ip -n "$out" link set "$p-d" up
  ip -n "$out" route add "$pod_cidr" via 192.0.2.1
  ip netns exec "$node" sysctl -qw net.ipv4.ip_forward=1
  local target
  for target in "$out 192.0.2.2" "$node $pod_gateway"; do
    # shellcheck disable=SC2086
    set -- $target
    ip netns exec "$1" python3 -c 'import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 8080)); s.listen(16)
while True: s.accept()[0].close()' "$2" &
    listeners+=("$!")
  done
  sleep 0.5
  reach() { ip netns exec "$pod" timeout 2 bash -c "echo >/dev/tcp/$1/8080" 2>/dev/null; }
  reach 192.0.2.2 || die "self-test: the outside is not reachable even without the rules"
  ip netns exec "$node" bash "$0" confinement-apply
  reach "$pod_gateway" || die "self-test: the node is not reachable with the rules"
  if reach 192.0.2.2; then die "self-test: Pod traffic was forwarded beyond the bridge despite the rules"; fi
  ip netns exec "$node" bash "$0" confinement-remove
  reach 192.0.2.2 || die "self-test: Pod traffic is still dropped after the rules were removed"
  echo "confinement self-test passed"
}

network_down() {
  confinement_down
  # Chains kube-proxy's cleanup leaves: the kubelet's (KUBE-FIREWALL, canaries).
  local ipt t rule chain
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for t in filter nat mangle; do
      "$ipt" -t "$t" -S 2>/dev/null | grep -E '^-A [A-Z]+ .*-j KUBE-' | grep -vE '^-A KUBE-' |
        sed 's/^-A/-D/' | while read -r rule; do
        eval "$ipt -t $t $rule" 2>/dev/null || true
      done || true
      for chain in $("$ipt" -t "$t" -S 2>/dev/null | awk '/^-N KUBE-/{print $2}'); do
        "$ipt" -t "$t" -F "$chain" 2>/dev/null || true
      done
      for chain in $("$ipt" -t "$t" -S 2>/dev/null | awk '/^-N KUBE-/{print $2}'); do
        "$ipt" -t "$t" -X "$chain" 2>/dev/null || true
      done
    done
  done
  ip route del "$service_cidr" 2>/dev/null || true
  ip link del "$bridge" 2>/dev/null || true
  rm -rf "$state/cni/ipam"
}

# --- control plane ----------------------------------------------------------------

control_plane_up() {
  local bin
  bin="$(k8s_bin)"
  start etcd "$bin/etcd" --name=imagewarden --data-dir="$state/etcd" \
    --listen-client-urls=http://127.0.0.1:23790 --advertise-client-urls=http://127.0.0.1:23790 \
    --listen-peer-urls=http://127.0.0.1:23800 --initial-advertise-peer-urls=http://127.0.0.1:23800 \
    --initial-cluster=imagewarden=http://127.0.0.1:23800 --unsafe-no-fsync=true --log-level=warn
  wait_for etcd 30 curl -sf http://127.0.0.1:23790/health
  start kube-apiserver "$bin/kube-apiserver" --etcd-servers=http://127.0.0.1:23790 \
    --bind-address="$node_ip" --advertise-address="$node_ip" --secure-port=6443 \
    --cert-dir="$state/pki/apiserver-certs" \
    --tls-cert-file="$state/pki/apiserver.crt" --tls-private-key-file="$state/pki/apiserver.key" \
    --client-ca-file="$state/pki/ca.crt" \
    --kubelet-client-certificate="$state/pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$state/pki/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$state/pki/ca.crt" \
    --kubelet-preferred-address-types=InternalIP \
    --service-account-key-file="$state/pki/sa.pub" \
    --service-account-signing-key-file="$state/pki/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-cluster-ip-range="$service_cidr" --service-node-port-range=30000-30999 \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --allow-privileged=true --v=1
  wait_for kube-apiserver 90 curl -sf --cacert "$state/pki/ca.crt" \
    --cert "$state/pki/admin.crt" --key "$state/pki/admin.key" "$api/readyz"
  start kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig="$state/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig="$state/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig="$state/kube-controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=10257 --cert-dir="$state/pki/kcm-certs" \
    --service-account-private-key-file="$state/pki/sa.key" --root-ca-file="$state/pki/ca.crt" \
    --use-service-account-credentials=true --leader-elect=false \
    --controllers='*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-route' --v=1
  start kube-scheduler "$bin/kube-scheduler" --kubeconfig="$state/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig="$state/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="$state/kube-scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=10259 --leader-elect=false --v=1
}

# --- registry and images ----------------------------------------------------------

registry_up() {
  [[ -x /usr/bin/docker-registry ]] || die "docker-registry not installed (tests/scripts/install-deps.sh)"
  mkdir -p "$state/registry"
  cat >"$state/registry/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $state/registry/storage
  delete:
    enabled: true
http:
  addr: $registry
  secret: imagewarden-cluster
EOF
  start registry /usr/bin/docker-registry serve "$state/registry/config.yml"
  wait_for registry 20 curl -sf "http://$registry/v2/"
}

images() {
  local oci="$here/tests/scripts/oci-image.sh" work="$state/images"
  mkdir -p "$work"
  # The pause image: one static binary.
  if ! curl -sf -o /dev/null "http://$registry/v2/imagewarden/pause/manifests/3.10" \
    -H "Accept: application/vnd.oci.image.manifest.v1+json"; then
    rm -rf "$work/pause" && mkdir -p "$work/pause"
    gcc -static -Os -s -o "$work/pause/pause" "$here/tests/cluster/pause.c"
    "$oci" --rootfs "$work/pause" --entrypoint '["/pause"]' --user 65535 "$pause_image" >/dev/null
    log "pushed $pause_image"
  fi
  "$here/tests/scripts/project-image.sh" "$image" >/dev/null
}

# --- node -------------------------------------------------------------------------

node_up() {
  local bin
  bin="$(k8s_bin)"
  mkdir -p "$state/containerd/certs.d/$registry" "$state/kubelet"
  cat >"$state/containerd/certs.d/$registry/hosts.toml" <<EOF
server = "http://$registry"
[host."http://$registry"]
  capabilities = ["pull", "resolve"]
EOF
  cat >"$state/containerd/config.toml" <<EOF
version = 2
root = "$state/containerd/root"
state = "$state/containerd/state"
[grpc]
  address = "$state/containerd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_image"
  # These machines deny CAP_SYS_RESOURCE even to root, so a negative oom_score_adj (the
  # kubelet asks -998 for sandboxes, -997 for Guaranteed Pods) cannot be set: clamp it
  # to containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$state/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$state/containerd/certs.d"
EOF
  start containerd /usr/bin/containerd --config "$state/containerd/config.toml"
  wait_for containerd 30 test -S "$state/containerd/containerd.sock"

  write_if_changed "$state/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $node_ip
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $state/pki/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $state/pki/kubelet-serving.crt
tlsPrivateKeyFile: $state/pki/kubelet-serving.key
cgroupDriver: cgroupfs
failSwapOn: false
containerRuntimeEndpoint: unix://$state/containerd/containerd.sock
imageServiceEndpoint: unix://$state/containerd/containerd.sock
resolvConf: /etc/resolv.conf
podCIDR: $pod_cidr
maxPods: 60
serializeImagePulls: false
evictionHard: {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
protectKernelDefaults: false
localStorageCapacityIsolation: true
EOF
  start kubelet "$bin/kubelet" --config="$state/kubelet/config.yaml" \
    --kubeconfig="$state/kubelet.kubeconfig" --root-dir="$state/kubelet/root" \
    --hostname-override="$node_name" --node-ip="$node_ip" --v=1
  # kube-proxy exits when its configuration file is written: write it only when it changes.
  write_if_changed "$state/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $state/kube-proxy.kubeconfig}
hostnameOverride: $node_name
clusterCIDR: $pod_cidr
bindAddress: $node_ip
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$node_ip/32"]
conntrack: {maxPerCore: 0}
EOF
  start kube-proxy "$bin/kube-proxy" --config="$state/kube-proxy.yaml" --v=1
  wait_for kube-proxy 60 curl -sf http://127.0.0.1:10256/livez
  wait_for kubelet 120 "$bin/kubectl" --kubeconfig="$state/admin.kubeconfig" wait \
    --for=condition=Ready "node/$node_name" --timeout=1s
}

# --- commands ---------------------------------------------------------------------

up() {
  [[ $(id -u) -eq 0 ]] || die "needs root (containerd, kubelet, network set-up)"
  for c in containerd runc openssl curl gcc; do
    command -v "$c" >/dev/null || die "$c not found: run tests/scripts/install-deps.sh"
  done
  [[ -x /usr/lib/cni/bridge ]] || die "CNI plugins not found: run tests/scripts/install-deps.sh"
  mkdir -p "$state"
  k8s_bin >/dev/null
  if ! running kube-apiserver; then
    # Nothing runs: clear what an earlier run may have left (processes, mounts, data).
    down 2>/dev/null
  fi
  pki
  network_up
  control_plane_up
  registry_up
  images
  node_up
  log "node $node_name is Ready; registry $registry; image $image"
  echo "$state/admin.kubeconfig"
}

down() {
  stop kube-proxy
  stop kubelet
  # Containers outlive the kubelet: stop their shims, then containerd.
  if [[ -S "$state/containerd/containerd.sock" ]]; then
    local ids
    ids="$(ctr --address "$state/containerd/containerd.sock" -n k8s.io tasks ls -q 2>/dev/null || true)"
    for id in $ids; do
      ctr --address "$state/containerd/containerd.sock" -n k8s.io tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
  fi
  pkill -9 -f "containerd-shim-runc-v2 .*-address $state/containerd/containerd.sock" 2>/dev/null || true
  stop containerd
  stop kube-scheduler
  stop kube-controller-manager
  stop kube-apiserver
  stop etcd
  stop registry
  # Mounts left by Pods (volumes, rootfs, netns), innermost first.
  awk -v p="$state/" 'index($2, p) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  if [[ -f "$state/kube-proxy.yaml" ]]; then
    "$(k8s_bin)/kube-proxy" --cleanup --config="$state/kube-proxy.yaml" >/dev/null 2>&1 || true
  fi
  network_down
  # Cluster data and the node's image store go, so the next `up` starts from an empty
  # cluster that pulls the images pushed then; the registry's storage is kept.
  rm -rf "$state/etcd" "$state/kubelet" "$state/containerd/root" \
    "$state/containerd/state" "$state/run"
  log "stopped"
}

status() {
  for c in etcd kube-apiserver kube-controller-manager kube-scheduler registry containerd kubelet kube-proxy; do
    if running "$c"; then
      echo "$c: running (pid $(cat "$state/run/$c.pid"))"
    else
      echo "$c: stopped"
    fi
  done
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
confinement-check) confinement_check ;;
confinement-selftest) confinement_selftest ;;
# Used by the self-test, inside its scratch node namespace.
confinement-apply) confinement_up ;;
confinement-remove) confinement_down ;;
images) images ;;
env)
  echo "export KUBECONFIG=$state/admin.kubeconfig"
  echo "export PATH=$(k8s_bin):\$PATH"
  echo "export IMAGEWARDEN_REGISTRY=$registry"
  echo "export IMAGEWARDEN_IMAGE=$image"
  echo "export IMAGEWARDEN_NODE_IP=$node_ip"
  ;;
*)
  echo "usage: $0 up|down|status|env|images|confinement-check|confinement-selftest" >&2
  exit 2
  ;;
esac
