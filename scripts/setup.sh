#!/usr/bin/env bash
# Installs everything Switchyard needs, idempotently: Debian packages for the kernel interfaces we
# shell out to, then npm dependencies, then the TypeScript build.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian package → why we need it.
apt_packages=(
  iproute2   # ip netns/link/route, ip -batch: the lab
  iptables   # iptables-restore (nf_tables and legacy): netfilter backend
  ipset      # ipset restore/swap: IP sets for iptables
  nftables   # nft -f: nftables backend
  conntrack  # conntrack -L/-E: flows and state checks on netfilter
  iperf3     # bench throughput
  wrk        # bench observe/services: native HTTP load, one connection per request
  nginx-light  # bench observe/services: the native server wrk loads (started per lab, in a pod)
  procps     # ps/pgrep used by lab cleanup
  etcd-server  # cluster mode: the datastore agents watch
  etcd-client  # etcdctl: the etcd process test reads and writes keys with the standard client
  openssl      # cluster mode: the CA and certificates of a lab's etcd (client TLS), made at cluster up
  chromium   # the web console's browser test (playwright-core drives it; nothing is downloaded)
  python3-minimal  # raw-socket ICMP/SCTP/GRE senders in the nftables table-mode tests
  prometheus  # promtool check metrics: the agents' exposition test (no server is started, see below)
)

missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need root to install Debian packages: ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # nginx's postinst starts a system nginx listening on port 80 in the root network namespace
  # (and prometheus's a server on 9090; we only want its promtool),
  # which Switchyard must never touch; the benches start their own nginx inside a pod. A
  # policy-rc.d that exits 101 tells invoke-rc.d (and deb-systemd-invoke) not to start services
  # while installing; it is removed afterwards only if this script created it (containers often
  # ship one of their own).
  policy_rc=/usr/sbin/policy-rc.d
  created_policy_rc=
  if [ ! -e "$policy_rc" ]; then
    printf '#!/bin/sh\n# switchyard setup: no service starts while installing\nexit 101\n' >"$policy_rc"
    chmod 755 "$policy_rc"
    created_policy_rc=1
    trap 'if [ -n "$created_policy_rc" ]; then rm -f "$policy_rc"; fi' EXIT
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ -n "$created_policy_rc" ]; then
    rm -f "$policy_rc"
    created_policy_rc=
  fi
  # Debian starts a system etcd where services may start; Switchyard runs its own per lab
  # (loopback, data in its state directory), so the one this script just installed is stopped.
  if [[ " ${missing[*]} " == *" etcd-server "* ]] && command -v systemctl >/dev/null &&
    systemctl is-active --quiet etcd 2>/dev/null; then
    systemctl disable --now etcd >/dev/null 2>&1 || true
  fi
  # Nor should a reboot start the system nginx that the package enabled.
  if [[ " ${missing[*]} " == *" nginx-light "* ]] && command -v systemctl >/dev/null; then
    systemctl disable --now nginx >/dev/null 2>&1 || true
  fi
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm dependencies"
  npm ci --no-audit --no-fund --loglevel=error
fi

echo "setup: building"
npm run --silent build
