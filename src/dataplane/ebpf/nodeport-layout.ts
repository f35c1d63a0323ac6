/**
 * Byte layouts of the node-port load balancer (traffic from outside the cluster, at tc on the
 * node's fabric interface), shared by the generated programs and the user-space sync.
 *
 * The service and backend maps have the connect-time load balancer's layouts (services-layout.ts)
 * with 4-byte addresses (node ports are IPv4 only, and a packet's address is 4 bytes here), and
 * are the node's own: their keys are the node's external address and the load-balancer
 * addresses, and under `externalTrafficPolicy: Local` a node lists only its own backends.
 */
import { codecs } from '../../bpf/index.js';

/** svcKey (services-layout.ts) with an IPv4 address; the value is svcValue. */
export const npSvcKey = codecs.struct({
  vip: codecs.ipv4,
  port: codecs.be16,
  proto: codecs.u8,
  node: codecs.u8,
});

/** backendValue with an IPv4 address; the key is backendKey. */
export const npBackendValue = codecs.struct({ addr: codecs.ipv4, port: codecs.be16, pad: codecs.u16 });

/** affinityValue with an IPv4 address. */
export const npAffinityValue = codecs.struct({
  slot: codecs.u32,
  addr: codecs.ipv4,
  port: codecs.be16,
  pad: codecs.u16,
  lastSeen: codecs.u64,
});

/** Map names the programs reference; also their pin names under `<node dir>/maps/`. */
export const NP_MAP = {
  services: 'np_svc',
  backends: 'np_backends',
  /** Translations of live connections, both directions (LRU: idle ones age out). */
  nat: 'np_nat',
  /** ClientIP affinity of outside clients: {client address, service id} → backend. */
  affinity: 'np_affinity',
} as const;

/**
 * The `pad` of a node-port backend value: the backend is on another node, so the connection is
 * source-translated to the node's fabric address (its replies come back through this node) and
 * sent out the fabric interface again with bpf_redirect_neigh.
 */
export const NP_BACKEND_REMOTE = 1;

/**
 * A packet's tuple as it is on the wire (addresses and ports in network order): the key of the
 * translation map. Both directions of a translated connection have an entry.
 */
export const natKey = codecs.struct({
  saddr: codecs.ipv4,
  daddr: codecs.ipv4,
  sport: codecs.be16,
  dport: codecs.be16,
  proto: codecs.u8,
  pad: codecs.u8,
  pad2: codecs.u16,
});
export type NatKey = codecs.CodecValue<typeof natKey>;

/** The tuple the packet leaves with, and what to do with it. */
export const natValue = codecs.struct({
  saddr: codecs.ipv4,
  daddr: codecs.ipv4,
  sport: codecs.be16,
  dport: codecs.be16,
  flags: codecs.u32,
});
export type NatValue = codecs.CodecValue<typeof natValue>;

export const NAT_FLAG = {
  /** The entry of the client's direction (client → service), written when the backend is chosen. */
  forward: 0x1,
  /** The entry of the replies (backend → client, or → node when source-translated). */
  reverse: 0x2,
  /** After the rewrite the packet leaves by the fabric interface again (bpf_redirect_neigh). */
  redirect: 0x4,
} as const;

export const npAffinityKey = codecs.struct({ client: codecs.ipv4, id: codecs.u32 });
export type NpAffinityKey = codecs.CodecValue<typeof npAffinityKey>;

/**
 * Source ports a source-translated connection takes on the node's fabric address: above the
 * kernel's default ephemeral range (32768–60999), so they never meet the node's own connections.
 */
export const SNAT_PORTS = { first: 61000, count: 4536 } as const;
/** Random ports tried for a source translation before the packet is dropped (all taken). */
export const SNAT_TRIES = 4;

/**
 * Per node, and hash maps are preallocated: sized for 10 000 reachable service ports with a few
 * backends each and 65 536 live translated connections (LRU: the oldest idle ones make room).
 */
export const NP_CAPACITY = {
  services: 32768,
  backends: 65536,
  nat: 65536,
  affinity: 16384,
} as const;
