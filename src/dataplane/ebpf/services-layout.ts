/**
 * Byte layouts of the connect-time load balancer's maps, shared by the generated cgroup
 * sock_addr programs and the user-space sync: one definition, so offsets cannot disagree.
 */
import { codecs } from '../../bpf/index.js';
import { addr16 } from './addr16.js';

/** struct bpf_sock_addr fields the programs use (include/uapi/linux/bpf.h). */
export const SOCK_ADDR = {
  userIp4: 4,
  /** user_ip6[4]: four u32 words in network order, read and written a word at a time. */
  userIp6: 8,
  /** The port in network order in the low 16 bits; written as a whole u32. */
  userPort: 24,
  protocol: 36,
} as const;

/** Map names the programs reference (resolved to fds at load time). */
export const SVC_MAP = {
  services: 'svc',
  backends: 'svc_backends',
  affinity: 'svc_affinity',
  revnat: 'svc_revnat',
  podNode: 'svc_pod_node',
} as const;

/**
 * Addresses in these maps are 16 bytes (addr16.ts): an IPv6 address as it is, an IPv4 one
 * IPv4-mapped. One set of maps then serves both families (one sync, one shadow, one drift
 * digest), and an IPv6 socket connecting to ::ffff:<IPv4 VIP> finds the IPv4 service under the
 * very key it asked for and is rewritten to ::ffff:<backend> with no extra code. connect4 writes
 * the constant ::ffff: prefix of its key and reads the backend's last word.
 */
export const MAPPED_PREFIX_WORD = 0xffff_0000; // bytes 00 00 ff ff as a little-endian u32 store

/**
 * Service key: {VIP, port, IP protocol, node}. A key with port 0 and protocol 0 marks the address
 * as a VIP at all, so a connect to a port the service does not define is refused instead of
 * leaking to the network. `node` is 0 for a service's own entry; under internalTrafficPolicy
 * Local, the entry with node n (a node index, see podNodeValue) holds the backends on node n.
 */
export const svcKey = codecs.struct({
  vip: addr16,
  port: codecs.be16,
  proto: codecs.u8,
  node: codecs.u8,
});
export type SvcKey = codecs.CodecValue<typeof svcKey>;

/** count = 0: no ready backend (connects are refused). affinity: ClientIP timeout in seconds, 0 = none. */
export const svcValue = codecs.struct({
  count: codecs.u32,
  id: codecs.u32,
  affinity: codecs.u32,
  flags: codecs.u32,
});
export type SvcValue = codecs.CodecValue<typeof svcValue>;

/** flags of a VIP marker entry. */
export const SVC_FLAG_VIP = 1;
/**
 * flags of a service entry with internalTrafficPolicy Local: a pod's connect goes to the entry
 * of its own node (node = its node index); a client no agent knows gets every backend.
 */
export const SVC_FLAG_LOCAL = 2;
/** Node indices fit svcKey.node: 1..255 (0 is the service's own entry). */
export const SVC_MAX_NODE_INDEX = 255;

export const backendKey = codecs.struct({ id: codecs.u32, slot: codecs.u32 });
export type BackendKey = codecs.CodecValue<typeof backendKey>;

export const backendValue = codecs.struct({ addr: addr16, port: codecs.be16, pad: codecs.u16 });
export type BackendValue = codecs.CodecValue<typeof backendValue>;

/**
 * ClientIP affinity is keyed by the client's network namespace cookie: in connect4/connect6 the
 * source address is usually not bound yet, and a pod is one namespace with one address of each
 * family, so the netns identifies the client exactly as its IPv4 or IPv6 address would (Cilium
 * does the same). The service id differs per family (each cluster IP has its own entry), so a
 * dual-stack client keeps one affinity per family, as kube-proxy does.
 */
export const affinityKey = codecs.struct({ netns: codecs.u64, id: codecs.u32, pad: codecs.u32 });
export type AffinityKey = codecs.CodecValue<typeof affinityKey>;

/** The chosen backend by slot and by value: a hit counts only if the slot still holds it. */
export const affinityValue = codecs.struct({
  slot: codecs.u32,
  addr: addr16,
  port: codecs.be16,
  pad: codecs.u16,
  lastSeen: codecs.u64,
});
export type AffinityValue = codecs.CodecValue<typeof affinityValue>;

/**
 * Reverse translation for recvmsg4/6 and getpeername4/6: {socket cookie, backend} → service.
 * Written by connect4/6 and sendmsg4/6 when they rewrite a destination.
 */
export const revnatKey = codecs.struct({
  cookie: codecs.u64,
  addr: addr16,
  port: codecs.be16,
  pad: codecs.u16,
  /** Explicit, so the key has no implicit tail padding the programs could leave unwritten. */
  pad2: codecs.u32,
});
export type RevnatKey = codecs.CodecValue<typeof revnatKey>;

export const revnatValue = codecs.struct({ vip: addr16, port: codecs.be16, pad: codecs.u16 });
export type RevnatValue = codecs.CodecValue<typeof revnatValue>;

/**
 * The node of a pod's processes, for internalTrafficPolicy Local: {pod cgroup id} → node index.
 * Each node's apply writes the entries of its own pods (bpf_get_current_cgroup_id in connect4).
 */
export const podNodeKey = codecs.struct({ cgroup: codecs.u64 });
export type PodNodeKey = codecs.CodecValue<typeof podNodeKey>;

export const podNodeValue = codecs.struct({ node: codecs.u32 });
export type PodNodeValue = codecs.CodecValue<typeof podNodeValue>;

export const SVC_CAPACITY = {
  /** Service ports plus one marker per VIP. */
  services: 65536,
  backends: 262144,
  affinity: 65536,
  revnat: 262144,
  podNode: 65536,
} as const;
