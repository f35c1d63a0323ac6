/**
 * The nftables backend's table as typed objects: the ruleset builder and the service builder
 * produce them, render prints them and diff compares two of them, so what `compile` shows and
 * what an update writes come from one description.
 */

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
