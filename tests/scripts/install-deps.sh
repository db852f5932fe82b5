#!/usr/bin/env bash
# Installs the Debian packages the tests need (real registry, and what builds test
# images), when they are missing. Needs root.
set -euo pipefail
# rpm and db5.3-util write the rpm databases of the rpm image tests (rpmbuild, rpm --justdb,
# Berkeley DB's db5.3_load) and answer rpm's own version order (rpm.vercmp).
# chromium and chromium-driver drive the web console in a real headless browser (WebDriver).
packages=(docker-registry ca-certificates containerd runc containernetworking-plugins iptables conntrack openssl curl rpm db5.3-util chromium chromium-driver)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The package starts nothing we rely on; tests run their own registries on free ports.
