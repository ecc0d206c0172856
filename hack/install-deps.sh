#!/usr/bin/env bash
# Install the system packages the tests and the demo use, idempotently.
# Debian packages: dnsmasq (test DNS upstream), dig (queries from pod namespaces),
# nftables + libnftables1 (the enforcement backend), iproute2 (namespaces, veth),
# dnsperf (benchmarks), prometheus (a real scrape in tests), conntrack (zombie checks),
# util-linux (nsenter: the netns harness runs commands inside namespaces with it).
set -euo pipefail
log() { printf '[install-deps] %s\n' "$*" >&2; }

packages=(dnsmasq-base bind9-dnsutils nftables libnftables1 iproute2 util-linux dnsperf prometheus conntrack procps psmisc openssl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    log "missing Debian packages: ${missing[*]} (run as root or: sudo apt-get install ${missing[*]})"
    exit 1
  fi
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  stamp=/var/lib/apt/periodic/acns-update-stamp
  if [[ ! -f $stamp ]] || [[ -n $(find "$stamp" -mmin +360 2>/dev/null) ]]; then
    apt-get update -qq >&2 && mkdir -p "$(dirname "$stamp")" && touch "$stamp"
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  # the prometheus package starts a system service we do not want; tests run their own
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
else
  log "system packages: present"
fi
