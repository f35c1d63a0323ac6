/**
 * Per-rule packet and byte counters from `iptables-save -c`, both families summed. Only the kernel
 * is read: the dispatch rules' comments name each endpoint chain's endpoint, and each policy rule's
 * comment is its IR rule id (rules split over several multiport matches add up).
 */
import { defaultRuleId } from '../../ir/rule-ids.js';
import type { Direction } from '../../ir/types.js';
import type { RuleCounter } from '../backend.js';
import { flat } from '../../util/intern.js';
import type { SavedRule, SavedTable } from './kernel.js';
import type { TableName } from './plan.js';
import {
  DEFAULT_ALLOW_COMMENT,
  DEFAULT_DENY_COMMENT,
  FROM_WL_CHAIN,
  parseEndpointChain,
  PREFILTER_CHAIN,
  TO_WL_CHAIN,
} from './names.js';

/** The tables countersFromSaved reads: the nat table's service rules have no counters of ours. */
export const COUNTED_TABLES: ReadonlySet<TableName> = new Set<TableName>(['filter', 'raw']);

export function commentOf(args: string): string | undefined {
  const m = /--comment (?:"((?:[^"\\]|\\.)*)"|(\S+))/.exec(args);
  if (!m) return undefined;
  return m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2];
}

/** Endpoint chain hash → endpoint id, from `-i/-o <veth> --comment "<endpoint>" -g SY-FW-<hash>`. */
function endpointsByHash(tables: readonly SavedTable[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const t of tables) {
    if (t.table !== 'filter') continue;
    for (const chain of [FROM_WL_CHAIN, TO_WL_CHAIN]) {
      for (const r of t.chains.get(chain) ?? []) {
        const target = / -g (\S+)/.exec(` ${r.args}`)?.[1];
        const parsed = target ? parseEndpointChain(target) : undefined;
        const endpoint = commentOf(r.args);
        if (parsed && endpoint) out.set(parsed.hash, endpoint);
      }
    }
  }
  return out;
}

export function countersFromSaved(tables: readonly SavedTable[]): RuleCounter[] {
  const endpoints = endpointsByHash(tables);
  const rows = new Map<string, RuleCounter>();
  const rank = new Map<RuleCounter, number>();
  const add = (
    key: string,
    row: Omit<RuleCounter, 'packets' | 'bytes'>,
    r: SavedRule,
    tier: number,
  ): void => {
    const existing = rows.get(key);
    if (existing) {
      existing.packets += r.packets;
      existing.bytes += r.bytes;
      return;
    }
    // Flat copies: the ids are slices of the whole `iptables-save -c` text (17 MB at 10k services),
    // and a metrics series that keeps one as a label kept all of it (docs/agent.md).
    const created: RuleCounter = { rule: flat(row.rule), packets: r.packets, bytes: r.bytes };
    if (row.endpoint !== undefined) created.endpoint = flat(row.endpoint);
    if (row.direction !== undefined) created.direction = row.direction;
    rows.set(key, created);
    rank.set(created, tier * 1e6 + rows.size);
  };
  for (const t of tables) {
    for (const [chain, rules] of t.chains) {
      if (t.table === 'raw' && chain === PREFILTER_CHAIN) {
        for (const r of rules) {
          const id = commentOf(r.args);
          if (id) add(`|${id}`, { rule: id }, r, 0);
        }
        continue;
      }
      const parsed = t.table === 'filter' ? parseEndpointChain(chain) : undefined;
      if (!parsed) continue;
      const endpoint = endpoints.get(parsed.hash) ?? `unknown:${parsed.hash}`;
      const direction: Direction = parsed.direction;
      for (const r of rules) {
        const comment = commentOf(r.args);
        if (!comment) continue;
        const rule =
          comment === DEFAULT_DENY_COMMENT || comment === DEFAULT_ALLOW_COMMENT
            ? defaultRuleId(endpoint, direction)
            : comment;
        add(
          `${endpoint}|${direction}|${rule}`,
          { rule, endpoint, direction },
          r,
          parsed.tier === 'global' ? 0 : 1,
        );
      }
    }
  }
  // Prefilters first, then by endpoint and direction; within those the global tier comes first
  // and rules keep their chain order.
  return [...rows.values()].sort((a, b) => {
    if ((a.endpoint === undefined) !== (b.endpoint === undefined)) return a.endpoint === undefined ? -1 : 1;
    const ka = `${a.endpoint ?? ''}|${a.direction ?? ''}`;
    const kb = `${b.endpoint ?? ''}|${b.direction ?? ''}`;
    return ka < kb ? -1 : ka > kb ? 1 : (rank.get(a) ?? 0) - (rank.get(b) ?? 0);
  });
}
