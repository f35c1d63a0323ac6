#!/usr/bin/env bash
# Lists what Switchyard has in the kernel (namespaces, pins, cgroups) and the processes it starts
# detached (agents, etcd), and fails on what a test run
# left behind. Usage:
#   leftovers.sh --list            print the current objects, one per line
#   leftovers.sh [BEFORE_FILE]     fail if objects exist that are not in BEFORE_FILE (a --list taken
#                                  before the run: what was already there is not this run's doing),
#                                  or if the ROOT namespace has any switchyard rule (always fatal)
set -u

list() {
  ip netns list 2>/dev/null | awk '{print "netns " $1}' | grep -E '^netns sy-' || true
  [ -d /sys/fs/bpf/switchyard ] && find /sys/fs/bpf/switchyard -mindepth 1 -maxdepth 1 -printf 'pin %p\n' 2>/dev/null
  # Processes a lab starts detached: agents (marked on their command line) and cluster etcds.
  pgrep -f -- '--switchyard-agent' 2>/dev/null | grep -vx "$$" | awk '{print "process agent " $1}'
  pgrep -a -x etcd 2>/dev/null | grep -oE -- '--name sy-[a-z0-9-]+' | sed 's/^--name /process etcd /'
  for cg in /sys/fs/cgroup/switchyard /sys/fs/cgroup/unified/switchyard; do
    [ -d "$cg" ] && find "$cg" -mindepth 1 -maxdepth 1 -type d -printf 'cgroup %p\n' 2>/dev/null
  done
  return 0
}

if [ "${1:-}" = "--list" ]; then list | sort; exit 0; fi

problems=0
before="${1:-/dev/null}"
new=$(comm -13 <(sort "$before") <(list | sort))
if [ -n "$new" ]; then
  echo "left behind by this run:" >&2
  echo "$new" | sed 's/^/  /' >&2
  problems=1
fi
if command -v iptables-save >/dev/null && iptables-save 2>/dev/null | grep -qE '(SY-|sy-)'; then
  echo "ROOT namespace has switchyard iptables rules" >&2; problems=1
fi
if command -v nft >/dev/null && nft list tables 2>/dev/null | grep -q switchyard; then
  echo "ROOT namespace has an nft table switchyard" >&2; problems=1
fi
if ip -d link show 2>/dev/null | grep -qE 'prog/xdp|xdpgeneric|xdpdrv'; then
  echo "an XDP program is attached in the ROOT namespace" >&2; problems=1
fi
exit "$problems"
