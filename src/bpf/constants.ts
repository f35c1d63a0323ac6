/**
 * Numbers from include/uapi/linux/bpf.h (Linux 6.18). Names are lower-case versions of the kernel's
 * enum members without their prefix, so `'lpm_trie'` is BPF_MAP_TYPE_LPM_TRIE.
 */

export const BpfCommand = {
  MAP_CREATE: 0,
  MAP_LOOKUP_ELEM: 1,
  MAP_UPDATE_ELEM: 2,
  MAP_DELETE_ELEM: 3,
  MAP_GET_NEXT_KEY: 4,
  PROG_LOAD: 5,
  OBJ_PIN: 6,
  OBJ_GET: 7,
  PROG_ATTACH: 8,
  PROG_DETACH: 9,
  PROG_TEST_RUN: 10,
  PROG_GET_NEXT_ID: 11,
  MAP_GET_NEXT_ID: 12,
  PROG_GET_FD_BY_ID: 13,
  MAP_GET_FD_BY_ID: 14,
  OBJ_GET_INFO_BY_FD: 15,
  PROG_QUERY: 16,
  RAW_TRACEPOINT_OPEN: 17,
  BTF_LOAD: 18,
  MAP_LOOKUP_BATCH: 24,
  MAP_LOOKUP_AND_DELETE_BATCH: 25,
  MAP_UPDATE_BATCH: 26,
  MAP_DELETE_BATCH: 27,
  LINK_CREATE: 28,
  LINK_UPDATE: 29,
  LINK_GET_FD_BY_ID: 30,
  LINK_GET_NEXT_ID: 31,
  LINK_DETACH: 34,
} as const;

export const bpfCommandNames: Record<number, string> = Object.fromEntries(
  Object.entries(BpfCommand).map(([name, value]) => [value, `BPF_${name}`]),
);

export const MAP_TYPES = {
  hash: 1,
  array: 2,
  prog_array: 3,
  perf_event_array: 4,
  percpu_hash: 5,
  percpu_array: 6,
  lru_hash: 9,
  lru_percpu_hash: 10,
  lpm_trie: 11,
  array_of_maps: 12,
  hash_of_maps: 13,
  ringbuf: 27,
} as const;
export type MapType = keyof typeof MAP_TYPES;

export const PROGRAM_TYPES = {
  socket_filter: 1,
  kprobe: 2,
  sched_cls: 3,
  sched_act: 4,
  tracepoint: 5,
  xdp: 6,
  perf_event: 7,
  cgroup_skb: 8,
  cgroup_sock: 9,
  sock_ops: 13,
  raw_tracepoint: 17,
  cgroup_sock_addr: 18,
  tracing: 26,
} as const;
export type ProgramType = keyof typeof PROGRAM_TYPES;

export const ATTACH_TYPES = {
  cgroup_inet_ingress: 0,
  cgroup_inet_egress: 1,
  cgroup_inet_sock_create: 2,
  cgroup_sock_ops: 3,
  cgroup_inet4_bind: 8,
  cgroup_inet6_bind: 9,
  cgroup_inet4_connect: 10,
  cgroup_inet6_connect: 11,
  cgroup_inet4_post_bind: 12,
  cgroup_inet6_post_bind: 13,
  cgroup_udp4_sendmsg: 14,
  cgroup_udp6_sendmsg: 15,
  cgroup_udp4_recvmsg: 19,
  trace_raw_tp: 23,
  trace_fentry: 24,
  trace_fexit: 25,
  cgroup_udp6_recvmsg: 20,
  cgroup_inet4_getpeername: 29,
  cgroup_inet6_getpeername: 30,
  cgroup_inet4_getsockname: 31,
  cgroup_inet6_getsockname: 32,
  cgroup_inet_sock_release: 34,
  xdp: 37,
  perf_event: 41,
  tcx_ingress: 46,
  tcx_egress: 47,
} as const;
export type AttachType = keyof typeof ATTACH_TYPES;

export const LINK_TYPES: Record<number, string> = {
  1: 'raw_tracepoint',
  2: 'tracing',
  3: 'cgroup',
  4: 'iter',
  5: 'netns',
  6: 'xdp',
  7: 'perf_event',
  8: 'kprobe_multi',
  9: 'struct_ops',
  10: 'netfilter',
  11: 'tcx',
  12: 'uprobe_multi',
  13: 'netkit',
};

/** BPF_MAP_CREATE map_flags. */
export const MapFlags = {
  NO_PREALLOC: 1 << 0,
  NO_COMMON_LRU: 1 << 1,
  RDONLY: 1 << 3,
  WRONLY: 1 << 4,
  RDONLY_PROG: 1 << 7,
  WRONLY_PROG: 1 << 8,
  MMAPABLE: 1 << 10,
} as const;

/** BPF_MAP_UPDATE_ELEM flags. */
export const UpdateFlags = { ANY: 0, NOEXIST: 1, EXIST: 2 } as const;
export type UpdateMode = 'any' | 'noexist' | 'exist';
export const updateModeFlag: Record<UpdateMode, number> = { any: 0, noexist: 1, exist: 2 };

/** Generic attach flags (BPF_LINK_CREATE / BPF_PROG_ATTACH). */
export const AttachFlags = {
  ALLOW_OVERRIDE: 1 << 0,
  ALLOW_MULTI: 1 << 1,
  REPLACE: 1 << 2,
  BEFORE: 1 << 3,
  AFTER: 1 << 4,
  ID: 1 << 5,
  LINK: 1 << 13,
} as const;

/** XDP attach flags from include/uapi/linux/if_link.h. */
export const XdpFlags = {
  UPDATE_IF_NOEXIST: 1 << 0,
  SKB_MODE: 1 << 1,
  DRV_MODE: 1 << 2,
  HW_MODE: 1 << 3,
} as const;

export const XdpAction = { ABORTED: 0, DROP: 1, PASS: 2, TX: 3, REDIRECT: 4 } as const;
/** tc / tcx return codes: TCX_NEXT (-1) hands the packet to the next program in the tcx chain. */
export const TcAction = { NEXT: -1, OK: 0, RECLASSIFY: 1, SHOT: 2, PIPE: 3, STOLEN: 4, REDIRECT: 7 } as const;

/** PROG_LOAD prog_flags. */
export const ProgramFlags = { STRICT_ALIGNMENT: 1 << 0, ANY_ALIGNMENT: 1 << 1 } as const;

/** Object name length limit (BPF_OBJ_NAME_LEN, including the terminating NUL). */
export const OBJ_NAME_LEN = 16;

/**
 * The kernel accepts only letters, digits, '_' and '.' in map and program names (EINVAL
 * otherwise), at most 15 of them; failing here names the culprit instead.
 */
export function checkObjectName(name: string, what: string): string {
  if (!/^[A-Za-z0-9_.]{0,15}$/.test(name))
    throw new Error(`${what} name '${name}' must be at most 15 letters, digits, '_' or '.'`);
  return name;
}
