/**
 * Kernel object names and fixed values of the iptables backend. Everything it creates is prefixed
 * (`SY-` chains, `sy-` sets) so apply, counters and remove can find exactly its own objects and
 * never touch anyone else's.
 */
import { createHash } from 'node:crypto';
import type { Direction } from '../../ir/types.js';

export type Family = 4 | 6;
export const FAMILIES: readonly Family[] = [4, 6];

export const CHAIN_PREFIX = 'SY-';
export const SET_PREFIX = 'sy-';

/** Jumped to from FORWARD: dispatch by pod interface, then accept what policy marked. */
export const FORWARD_CHAIN = 'SY-FORWARD';
/** Jumped to from INPUT: traffic from a pod to the node itself is the pod's egress too. */
export const INPUT_CHAIN = 'SY-INPUT';
/** `-i <pod veth>` → the pod's egress chain. */
export const FROM_WL_CHAIN = 'SY-FROM-WL';
/** `-o <pod veth>` → the pod's ingress chain. */
export const TO_WL_CHAIN = 'SY-TO-WL';
/**
 * Reached with `-g`: sets the accept mark and falls off its end, which returns to whoever *jumped*
 * to the current chain. That makes "mark and return" one rule wherever it is used.
 */
export const ALLOW_CHAIN = 'SY-ALLOW';
/** raw PREROUTING: deny-listed sources from the fabric, before conntrack. */
export const PREFILTER_CHAIN = 'SY-PREFILTER';

/** nat PREROUTING and OUTPUT: `-d VIP -p P --dport N` → the service port's chain. */
export const SERVICES_CHAIN = 'SY-SERVICES';
/** filter FORWARD, INPUT and OUTPUT: service ports without backends and undefined ports of a VIP. */
export const SERVICES_REJECT_CHAIN = 'SY-SVC-REJECT';
/** From SY-SERVICES for the node's external address (kube-proxy's KUBE-NODEPORTS): `--dport NP` → SY-EXT. */
export const NODEPORTS_CHAIN = 'SY-NODEPORTS';
/** nat POSTROUTING (kube-proxy's KUBE-POSTROUTING): masquerades what carries MASQ_MARK. */
export const POSTROUTING_CHAIN = 'SY-POSTROUTING';

/**
 * Masquerade mark (kube-proxy's bit for the same job): set in nat PREROUTING/OUTPUT on traffic
 * that must leave with the node's address — from outside under externalTrafficPolicy Cluster, from
 * the node itself, a pod reaching itself through its service (hairpin) — and read in POSTROUTING.
 * Distinct from ACCEPT_MARK, which the filter table clears and sets for its own job.
 */
export const MASQ_MARK = '0x4000';

/**
 * Accept mark (felix uses the same bit for the same job). A packet from one local pod to another
 * crosses FORWARD once, so the egress verdict cannot ACCEPT outright or the destination's ingress
 * chain would never run: each endpoint chain sets this bit and returns, and SY-FORWARD accepts
 * marked packets after both dispatch chains ran.
 */
export const ACCEPT_MARK = '0x10000';

/**
 * Flow aggregation (see rule-text.ts): every deciding rule counts what it decides in its own ipset
 * (`sy-flow4-<tag>` / `sy-flow6-<tag>`, the tag being flowRuleTag(verdict, rule id) as 8 hex
 * digits), the established path counts the later packets of connections in `sy-flow4-traffic` /
 * `sy-flow6-traffic`. `l`, `o` and `w` are not hex digits: no IR set (`sy-<hex>`, `sy-p<hex>`,
 * `sy-pf-<hex>`) can start the same way.
 */
export const FLOW_SET_PREFIX = 'sy-flow';
/** Idle elements go after this long (never refreshed: a busy element is re-created, see flow-counters.ts). */
export const FLOW_SET_TIMEOUT_S = 60;
/**
 * Elements per flow set: aggregates (source, destination, protocol, port) one rule decided within
 * a timeout, or 4-tuples with established traffic. Beyond it the verdict stands and the packet is
 * counted as not aggregated (the SY-FLOWFULL chains).
 */
export const FLOW_SET_MAXELEM = 65536;
/** Initial buckets; the kernel grows the hash as elements come. */
export const FLOW_SET_HASHSIZE = 1024;

/**
 * Packets whose flow set was full get the verdict they were going to get through these chains
 * (reached like the verdict: `-g` for allow, `-j` otherwise); their one rule's counter is the
 * "not aggregated" count a flow reader reports as lost.
 */
export const FLOW_FULL_ALLOW_CHAIN = 'SY-FLOWFULL-ALLOW';
export const FLOW_FULL_DROP_CHAIN = 'SY-FLOWFULL-DROP';
export const FLOW_FULL_LOG_CHAIN = 'SY-FLOWFULL-LOG';
export const FLOW_FULL_TRAFFIC_CHAIN = 'SY-FLOWFULL-TRAFFIC';
export const FLOW_FULL_CHAINS = [
  FLOW_FULL_ALLOW_CHAIN,
  FLOW_FULL_DROP_CHAIN,
  FLOW_FULL_LOG_CHAIN,
  FLOW_FULL_TRAFFIC_CHAIN,
] as const;

/** iptables chain names are at most 28 characters. */
const MAX_CHAIN = 28;
/** ipset names are at most 31 characters. */
const MAX_SET = 31;
/** xt_comment stores at most 255 characters. */
const MAX_COMMENT = 255;

export const TMP_SUFFIX = '-tmp';
const V6_SUFFIX = '-v6';

function hash(text: string, length: number): string {
  return createHash('sha256').update(text).digest('hex').slice(0, length);
}

/** Per-endpoint hash: 12 hex digits keep `SY-FWG-<hash>` at 19 characters. */
export function endpointHash(endpointId: string): string {
  return hash(endpointId, 12);
}

/**
 * The endpoint's chain for one direction: `SY-FW-…` holds traffic *from* the workload (its egress
 * policy), `SY-TW-…` traffic *to* it (ingress); the `G` variants hold the global tier.
 */
export function endpointChain(endpointId: string, direction: Direction, tier: 'main' | 'global'): string {
  const base = direction === 'egress' ? 'SY-FW' : 'SY-TW';
  const name = `${base}${tier === 'global' ? 'G' : ''}-${endpointHash(endpointId)}`;
  if (name.length > MAX_CHAIN) throw new Error(`chain name ${name} is longer than ${MAX_CHAIN}`);
  return name;
}

/**
 * A chain of an endpoint's decision table (`SY-FWT-<endpoint>-<digest>`, 28 characters): named
 * after the endpoint, direction and a digest of its own rules, so a chain whose rules did not
 * change keeps its name (and its counters) across updates, and equal chains are one chain.
 */
export function tableChain(endpointId: string, direction: Direction, digest: string): string {
  const name = `${direction === 'egress' ? 'SY-FWT' : 'SY-TWT'}-${endpointHash(endpointId)}-${digest}`;
  if (name.length > MAX_CHAIN) throw new Error(`chain name ${name} is longer than ${MAX_CHAIN}`);
  return name;
}

/** 8 hex digits of a text's hash: the digests in table chain names. */
export function digestOf(text: string): string {
  return hash(text, 8);
}

/**
 * A decision table's set for one family, class digit position and digit value
 * (`sy-te4-<endpoint>-<level><value>-<generation>`, 27 characters, so that `-tmp` still fits
 * ipset's 31 when a repair swaps one): the generation is a digest of the members, so new contents
 * are always a new set, filled before any rule refers to it, and the set a rule names never
 * changes under it.
 */
export function tableSetName(
  endpointId: string,
  direction: Direction,
  family: Family,
  level: number,
  value: number,
  members: readonly string[],
): string {
  if (level > 15 || value > 15) throw new Error(`class digit ${level} = ${value} does not fit a set name`);
  const generation = hash(members.join('\n'), 7);
  const name = `${SET_PREFIX}t${direction === 'egress' ? 'e' : 'i'}${family}-${endpointHash(endpointId).slice(0, 9)}-${level.toString(16)}${value.toString(16)}-${generation}`;
  if (name.length + TMP_SUFFIX.length > MAX_SET)
    throw new Error(`set name ${name} is too long for ${MAX_SET}`);
  return name;
}

/** A service port's chain (`SY-SVC-…`, kube-proxy's KUBE-SVC-…): picks one backend. */
export function serviceChain(tableId: string): string {
  return `SY-SVC-${hash(tableId, 16)}`;
}

/**
 * A service port's chain for traffic from outside (`SY-EXT-…`, kube-proxy's KUBE-EXT-…): the
 * externalTrafficPolicy — masquerade and every backend (Cluster), or the client address kept and
 * only this node's backends (Local).
 */
export function serviceExternalChain(tableId: string): string {
  return `SY-EXT-${hash(tableId, 16)}`;
}

/** A service port's chain over this node's backends only (`SY-SVL-…`, kube-proxy's KUBE-SVL-…). */
export function serviceLocalChain(tableId: string): string {
  return `SY-SVL-${hash(tableId, 16)}`;
}

/**
 * One backend of one service port (`SY-SEP-…`): DNATs to it. Keyed by the backend's address and
 * port too, so a backend that moves gets a new chain (and a fresh affinity list).
 */
export function serviceEndpointChain(
  tableId: string,
  endpoint: string,
  address: string,
  port: number,
): string {
  return `SY-SEP-${hash(`${tableId}|${endpoint}|${address}:${port}`, 16)}`;
}

/** What an endpoint chain's name says about it, for counters (which only see the kernel). */
export function parseEndpointChain(
  chain: string,
): { hash: string; direction: Direction; tier: 'main' | 'global' | 'table' } | undefined {
  const m = /^SY-(FW|TW)(G|T)?-([0-9a-f]{12})(-[0-9a-f]{8})?$/.exec(chain);
  if (!m || (m[2] === 'T') !== (m[4] !== undefined)) return undefined;
  return {
    hash: m[3] as string,
    direction: m[1] === 'FW' ? 'egress' : 'ingress',
    tier: m[2] === 'G' ? 'global' : m[2] === 'T' ? 'table' : 'main',
  };
}

/**
 * ipset name of an IR set in one family. IR ids are already `sy-…` and short; IPv6 members go to
 * a twin set because an ipset holds one family only. Over-long names (never produced by calc today)
 * fall back to a hash so the temporary `-tmp` name still fits.
 */
export function ipsetName(irId: string, family: Family): string {
  const name = family === 4 ? irId : irId + V6_SUFFIX;
  if (name.startsWith(SET_PREFIX) && name.length + TMP_SUFFIX.length <= MAX_SET) return name;
  return `${SET_PREFIX}${hash(irId, 16)}${family === 4 ? '' : V6_SUFFIX}`;
}

export function tmpSetName(name: string): string {
  return name + TMP_SUFFIX;
}

/** A comment that fits xt_comment; ids longer than that keep their head and a hash of the whole. */
export function commentText(text: string): string {
  if (text.length <= MAX_COMMENT) return text;
  return `${text.slice(0, MAX_COMMENT - 13)}~${hash(text, 12)}`;
}

/** The flow set of one deciding rule (its tag, see flowRuleTag) in one family: `sy-flow4-0123abcd`. */
export function flowSetName(family: Family, tag: number): string {
  return `${FLOW_SET_PREFIX}${family}-${tag.toString(16).padStart(8, '0')}`;
}

/** The set of established traffic in one family: `sy-flow4-traffic`. */
export function trafficSetName(family: Family): string {
  return `${FLOW_SET_PREFIX}${family}-traffic`;
}

/** What a flow set's name says: its family, and the rule tag of a decision set. */
export function parseFlowSetName(name: string): { family: Family; tag?: number } | undefined {
  const m = /^sy-flow([46])-(?:([0-9a-f]{8})|traffic)$/.exec(name);
  if (!m) return undefined;
  const family: Family = m[1] === '4' ? 4 : 6;
  return m[2] !== undefined ? { family, tag: parseInt(m[2], 16) } : { family };
}

/** Comments of the synthetic rules counters report. */
export const DEFAULT_DENY_COMMENT = 'default-deny';
export const DEFAULT_ALLOW_COMMENT = 'default-allow';

/** Double-quoted for iptables-restore; ids never contain quotes or backslashes (DNS names). */
export function quote(text: string): string {
  return `"${text.replace(/["\\]/g, '')}"`;
}
