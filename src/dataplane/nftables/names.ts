/**
 * Names of everything in `table inet switchyard`. Counters and incremental updates find objects
 * again by these names, so they derive only from stable IR identifiers (interface names, set ids).
 */
import type { Direction } from '../../ir/types.js';

export const TABLE = 'switchyard';
export const FAMILY = 'inet';
/** `inet switchyard`, as every command spells the table. */
export const TABLE_REF = `${FAMILY} ${TABLE}`;

export const FORWARD_CHAIN = 'forward';
export const INPUT_CHAIN = 'input';
export const PREFILTER_CHAIN = 'prefilter';
/** Host-side pod veths of the node: the prefilter skips them (same-node traffic never crossed the fabric). */
export const WORKLOAD_IFACES_SET = 'workload-ifaces';

/**
 * Flow records (decision.ts, flow-sets.ts): each deciding rule's own chain, named by its verdict
 * and its 32-bit tag (`flowRuleTag`), shared by every endpoint the rule applies to. The verdict is
 * in the name, so two rules whose tags collide can share a chain only when they also decide alike.
 */
export function flowChain(verdict: 'allow' | 'deny' | 'log', tag: number): string {
  return `flow-${verdict}-${tag.toString(16).padStart(8, '0')}`;
}

/** The established path's recording chain. */
export const FLOW_TRAFFIC_CHAIN = 'flow-traffic';

/** Chain-name prefix per direction, as Calico names them: from-workload = egress, to-workload = ingress. */
export function directionPrefix(direction: Direction): 'fw' | 'tw' {
  return direction === 'egress' ? 'fw' : 'tw';
}

export function dispatchMap(direction: Direction): string {
  return `${directionPrefix(direction)}-dispatch`;
}

/** Entry chain of one endpoint and direction: the global tier. */
export function tierChain(direction: Direction, hostInterface: string): string {
  return `${directionPrefix(direction)}-${safeName(hostInterface)}`;
}

/** The Kubernetes tier, reached by `goto` from the global tier. */
export function kubernetesChain(direction: Direction, hostInterface: string): string {
  return `${tierChain(direction, hostInterface)}-k8s`;
}

/**
 * Decision tables (table.ts): an endpoint's objects carry its entry chain's name plus a suffix.
 * Classes and outcomes are named by a hash of what they do, so an update that leaves one alone
 * leaves its name, its chain and its map alone.
 */
export function peersMap(direction: Direction, hostInterface: string, family: Family): string {
  return `${tierChain(direction, hostInterface)}-peers-${family}`;
}

/** One class of remote addresses: its chain looks the packet's protocol and port up. */
export function classChain(direction: Direction, hostInterface: string, key: string): string {
  return `${tierChain(direction, hostInterface)}-class-${key}`;
}

/** The class's (protocol . destination port) → outcome map. */
export function classPortsMap(direction: Direction, hostInterface: string, key: string): string {
  return `${tierChain(direction, hostInterface)}-ports-${key}`;
}

/** One outcome (deciding rule, Log rules on the way, verdict): counts, logs and decides. */
export function outcomeChain(direction: Direction, hostInterface: string, key: string): string {
  return `${tierChain(direction, hostInterface)}-out-${key}`;
}

/**
 * The comment on a table's entry chain, so counters learn the chain's endpoint even when no
 * outcome counts the default rule (the walk's chains always end with it).
 */
export function tableMarker(endpoint: string, direction: Direction): string {
  return `${endpoint}/${direction}/table`;
}

/** Parses a per-endpoint chain name back into interface and direction (for counters). */
export function parseEndpointChain(
  chain: string,
): { hostInterface: string; direction: Direction } | undefined {
  const m = /^(fw|tw)-(.+?)(-k8s|-class-[0-9a-f]+|-out-[0-9a-f]+)?$/.exec(chain);
  if (!m || m[2] === 'dispatch') return undefined;
  return { hostInterface: m[2] as string, direction: m[1] === 'fw' ? 'egress' : 'ingress' };
}

export type Family = 'v4' | 'v6';

/** One nft set per IR set and address family: nft sets hold a single key type. */
export function familySet(setId: string, family: Family): string {
  return `${safeName(setId)}-${family}`;
}

export const ESTABLISHED_RULE_ID = 'conntrack/established';
export const INVALID_RULE_ID = 'conntrack/invalid';

/**
 * IR ids become nft identifiers unquoted, so anything outside nft's identifier alphabet is a bug
 * upstream: refuse it rather than emit a script that means something else.
 */
export function safeName(id: string): string {
  if (!/^[A-Za-z][A-Za-z0-9_.-]*$/.test(id)) throw new Error(`'${id}' is not usable as an nftables name`);
  return id;
}

/** nft keeps at most 127 bytes of a comment or log prefix; quotes cannot be escaped inside one. */
export function quoted(text: string, max = 127): string {
  return `"${sanitized(text, max)}"`;
}

/** What quoted() puts between the quotes. */
export function sanitized(text: string, max = 127): string {
  let s = text.replace(/["\\\n\r]/g, '_');
  while (Buffer.byteLength(s) > max) s = s.slice(0, -1);
  return s;
}
