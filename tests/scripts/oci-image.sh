#!/usr/bin/env bash
# Assembles an OCI image from directories (one layer each, reproducible tars) and pushes
# it to a registry over the Distribution API (plain HTTP; a local registry).
#
#   oci-image.sh --rootfs DIR [--rootfs DIR]... [--entrypoint JSON] [--cmd JSON]
#                [--user USER] [--env K=V]... [--workdir DIR] HOST:PORT/REPO:TAG
#
# Prints the manifest digest.
set -euo pipefail

rootfs=() env=() entrypoint=null cmd=null user="" workdir="/"
while (($#)); do
  case $1 in
  --rootfs) rootfs+=("$2"); shift 2 ;;
  --entrypoint) entrypoint=$2; shift 2 ;;
  --cmd) cmd=$2; shift 2 ;;
  --user) user=$2; shift 2 ;;
  --env) env+=("$2"); shift 2 ;;
  --workdir) workdir=$2; shift 2 ;;
  -*) echo "oci-image: unknown option $1" >&2; exit 2 ;;
  *) ref=$1; shift ;;
  esac
done
[[ -n ${ref:-} && ${#rootfs[@]} -gt 0 ]] || {
  echo "usage: oci-image.sh --rootfs DIR... [options] HOST:PORT/REPO:TAG" >&2
  exit 2
}
host=${ref%%/*}
rest=${ref#*/}
repo=${rest%:*}
tag=${rest##*:}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }

# push_blob FILE: uploads FILE (monolithic upload) unless the registry has it.
push_blob() {
  local file=$1 digest
  digest="sha256:$(sha "$file")"
  if curl -sf -o /dev/null -I "http://$host/v2/$repo/blobs/$digest"; then
    return
  fi
  local location
  location="$(curl -sf -D - -o /dev/null -X POST "http://$host/v2/$repo/blobs/uploads/" |
    awk 'tolower($1) == "location:" {print $2}' | tr -d '\r')"
  [[ -n $location ]] || { echo "oci-image: $host refused an upload to $repo" >&2; exit 1; }
  [[ $location == http* ]] || location="http://$host$location"
  local sep='?'
  [[ $location == *\?* ]] && sep='&'
  curl -sf -o /dev/null -X PUT -H "Content-Type: application/octet-stream" \
    --data-binary "@$file" "$location${sep}digest=$digest" ||
    { echo "oci-image: uploading $digest to $host/$repo failed" >&2; exit 1; }
}

layers_json="" diff_ids="" history=""
for dir in "${rootfs[@]}"; do
  [[ -d $dir ]] || { echo "oci-image: $dir is not a directory" >&2; exit 1; }
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --pax-option=delete=atime,delete=ctime \
    -C "$dir" -cf "$work/layer.tar" .
  diff_id="sha256:$(sha "$work/layer.tar")"
  gzip -n -6 <"$work/layer.tar" >"$work/layer.tar.gz"
  push_blob "$work/layer.tar.gz"
  layers_json+="${layers_json:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$(sha "$work/layer.tar.gz")\",\"size\":$(size "$work/layer.tar.gz")}"
  diff_ids+="${diff_ids:+,}\"$diff_id\""
  history+="${history:+,}{\"created_by\":\"oci-image.sh --rootfs $(basename "$dir")\"}"
done

env_json=""
for e in "${env[@]}"; do
  env_json+="${env_json:+,}\"$e\""
done
cat >"$work/config.json" <<EOF
{"architecture":"amd64","os":"linux","config":{"User":"$user","Env":[$env_json],"Entrypoint":$entrypoint,"Cmd":$cmd,"WorkingDir":"$workdir"},"rootfs":{"type":"layers","diff_ids":[$diff_ids]},"history":[$history]}
EOF
push_blob "$work/config.json"
cat >"$work/manifest.json" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$(sha "$work/config.json")","size":$(size "$work/config.json")},"layers":[$layers_json]}
EOF
curl -sf -o /dev/null -X PUT -H "Content-Type: application/vnd.oci.image.manifest.v1+json" \
  --data-binary "@$work/manifest.json" "http://$host/v2/$repo/manifests/$tag" ||
  { echo "oci-image: pushing the manifest of $ref failed" >&2; exit 1; }
echo "sha256:$(sha "$work/manifest.json")"
