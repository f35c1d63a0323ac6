#!/usr/bin/env bash
# Fails if anything Switchyard creates is still in the kernel: tests and demos must clean up.
set -u
problems=0
ns=$(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^sy-' || true)
if [ -n "$ns" ]; then echo "leftover network namespaces: $ns" >&2; problems=1; fi
if [ -d /sys/fs/bpf/switchyard ] && [ -n "$(ls -A /sys/fs/bpf/switchyard 2>/dev/null)" ]; then
  echo "leftover pins under /sys/fs/bpf/switchyard" >&2; problems=1
fi
for cg in /sys/fs/cgroup/switchyard /sys/fs/cgroup/unified/switchyard; do
  if [ -d "$cg" ] && [ -n "$(find "$cg" -mindepth 1 -type d 2>/dev/null | head -1)" ]; then
    echo "leftover cgroups under $cg" >&2; problems=1
  fi
done
if command -v iptables-save >/dev/null && iptables-save 2>/dev/null | grep -qE '(SY-|sy-)'; then
  echo "ROOT namespace has switchyard iptables rules" >&2; problems=1
fi
if command -v nft >/dev/null && nft list tables 2>/dev/null | grep -q switchyard; then
  echo "ROOT namespace has an nft table switchyard" >&2; problems=1
fi
exit "$problems"
