/**
 * The nftables backend's table as typed objects: the ruleset builder and the service builder
 * produce them, render prints them and diff compares two of them, so what `compile` shows and
 * what an update writes come from one description.
 */
import { flat, flattened } from '../../util/intern.js';

export interface NftSet {
  /** `limit` and `counter` are named stateful objects (no elements). */
  kind: 'set' | 'map' | 'limit' | 'counter';
  name: string;
  /** The declaration body: `{ type ipv4_addr; flags interval; }`. */
  spec: string;
  /** Element texts in a deterministic order; for maps `key : verdict`. */
  elements: string[];
  /** Printed as a `#` line above the set: what defines the members. */
  note?: string;
}

export interface NftChain {
  name: string;
  /** Declaration body; base chains carry their hook here. */
  spec: string;
  base: boolean;
  rules: string[];
  note?: string;
}

export interface NftRuleset {
  node: string;
  sets: NftSet[];
  maps: NftSet[];
  /** Regular chains in endpoint order, then base chains. */
  chains: NftChain[];
}

/**
 * A chain with flat strings (util/intern.ts): rules made by template literals are V8 cons strings,
 * trees of their pieces for as long as they are kept. For objects kept across applies (the
 * services' 12k chains at 10k services): 20 → 10 MiB for the whole ruleset (docs/agent.md).
 */
export function flatChain(c: NftChain): NftChain {
  return {
    name: flat(c.name),
    spec: flat(c.spec),
    base: c.base,
    rules: c.rules.map(flat),
    ...(c.note !== undefined ? { note: flat(c.note) } : {}),
  };
}

/** A set or map with flat strings (see flatChain). */
export function flatSet(s: NftSet): NftSet {
  return {
    kind: s.kind,
    name: flat(s.name),
    spec: flat(s.spec),
    elements: s.elements.map(flat),
    ...(s.note !== undefined ? { note: flat(s.note) } : {}),
  };
}

/**
 * Flattens the strings of chains made anew for every apply (the endpoints' tiers and flow chains)
 * where they lie: they stay in the shadow until the next apply, and as template literals each
 * rule was a tree of its pieces (at 10k endpoints, 3,000 chains: 6.4 MiB as trees; 2.6 MiB flat
 * and up to 0.5 MiB of the roots `flattened` leaves).
 */
export function flattenChains(chains: readonly NftChain[]): void {
  for (const c of chains) {
    flattened(c.name);
    flattened(c.spec);
    for (const r of c.rules) flattened(r);
    if (c.note !== undefined) flattened(c.note);
  }
}
