/**
 * `nft -j -t list table inet switchyard` → RuleCounter per (rule comment, endpoint, direction).
 * -t leaves set elements out, so a 1M-entry prefilter does not slow a counter read. The endpoint
 * of a per-endpoint chain comes from its default rule's comment (`<endpoint>/<direction>/default`),
 * which every Kubernetes-tier chain ends with, or, in table mode, from the entry chain's marker
 * (`<endpoint>/<direction>/table`, on a rule without a counter, so it is never reported itself).
 */
import type { Direction } from '../../ir/types.js';
import type { RuleCounter } from '../backend.js';
import { eachItem, itemKind, streamNftTable } from './json-items.js';
import { parseEndpointChain } from './names.js';

interface JsonRule {
  chain: string;
  comment?: string;
  expr: Record<string, unknown>[];
}

/** The rule of an item with a comment (only those are counted or name an endpoint), else undefined. */
function commentedRule(item: string): JsonRule | undefined {
  // The services' thousands of chains and rules have none: skipped unparsed.
  if (itemKind(item) !== 'rule' || !item.includes('"comment"')) return undefined;
  const rule = (JSON.parse(item) as { rule?: JsonRule }).rule;
  return rule && typeof rule.chain === 'string' && Array.isArray(rule.expr) ? rule : undefined;
}

function counterOf(rule: JsonRule): { packets: number; bytes: number } | undefined {
  for (const e of rule.expr) {
    // `counter name "…"` (a named counter, shared) shows as a string: not this rule's own.
    const c = e.counter as { packets?: number; bytes?: number } | string | undefined;
    if (c && typeof c === 'object') return { packets: c.packets ?? 0, bytes: c.bytes ?? 0 };
  }
  return undefined;
}

/** An item handler that keeps the commented rules of the items it is given in `rules`. */
function keepCommentedRules(rules: JsonRule[]): (item: string) => void {
  return (item) => {
    const rule = commentedRule(item);
    if (rule) rules.push(rule);
  };
}

/** The counters of whole `nft -j -t list table` output. */
export function parseCounters(json: string): RuleCounter[] {
  const rules: JsonRule[] = [];
  eachItem(json, keepCommentedRules(rules));
  return countersOf(rules);
}

/**
 * The counters of `table` in `netns` (`nft -j -t list table`), read item by item as nft writes
 * them (json-items.ts); none when the table is not there.
 */
export async function readCounters(netns: string, family: string, table: string): Promise<RuleCounter[]> {
  const rules: JsonRule[] = [];
  const present = await streamNftTable(netns, family, table, keepCommentedRules(rules), ['-t']);
  return present ? countersOf(rules) : [];
}

function countersOf(rules: readonly JsonRule[]): RuleCounter[] {
  // Interface → endpoint id, learnt from the default rules.
  const endpoints = new Map<string, string>();
  for (const r of rules) {
    const chain = parseEndpointChain(r.chain);
    const m = r.comment ? /^(.+)\/(ingress|egress)\/(default|table)$/.exec(r.comment) : null;
    if (chain && m) endpoints.set(chain.hostInterface, m[1] as string);
  }
  const totals = new Map<string, RuleCounter>();
  for (const r of rules) {
    const counter = counterOf(r);
    if (!r.comment || !counter) continue;
    const chain = parseEndpointChain(r.chain);
    const endpoint = chain ? endpoints.get(chain.hostInterface) : undefined;
    const direction: Direction | undefined = chain?.direction;
    const key = `${r.comment}|${endpoint ?? ''}|${direction ?? ''}`;
    const seen = totals.get(key);
    if (seen) {
      // One IR rule spans an nft rule per address family.
      seen.packets += counter.packets;
      seen.bytes += counter.bytes;
    } else {
      totals.set(key, {
        rule: r.comment,
        ...(endpoint !== undefined ? { endpoint } : {}),
        ...(direction !== undefined ? { direction } : {}),
        ...counter,
      });
    }
  }
  return [...totals.values()];
}

/** Packets of the named flow-log counter (`nft -j list counter inet switchyard flowlog-lost`). */
export function parseNamedCounter(json: string): number {
  const doc = JSON.parse(json) as { nftables?: Record<string, unknown>[] };
  for (const item of doc.nftables ?? []) {
    const c = item.counter as { packets?: number } | undefined;
    if (c && typeof c === 'object') return c.packets ?? 0;
  }
  return 0;
}
