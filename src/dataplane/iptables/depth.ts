/**
 * How deep our chains nest, counted the way nf_tables counts it. When a table commits, the kernel
 * walks every chain reachable from each base chain (nft_chain_validate): every jump *and* goto
 * is one level down, and a chain reached at level NFT_JUMP_STACK_SIZE (16; the base chain is
 * level 0) fails the whole commit with EMLINK ("RULE_INSERT failed (Too many links)"). The
 * decision-table trees are the only deep part of a plan, so each is checked as rendered, within
 * its family's filter table, and one that would be too deep is walked instead (render.ts).
 * iptables-legacy has no such limit; the same rendering serves both.
 */
import type { TablePlan } from './plan.js';

/** The deepest level nf_tables accepts for a chain: NFT_JUMP_STACK_SIZE - 1. */
export const NFT_MAX_LEVEL = 15;
/**
 * Levels kept spare below the kernel's limit, so that what we render never sits right at the edge
 * (a kernel that counts one more level, or a chain someone else puts in front of ours).
 */
export const LEVEL_MARGIN = 2;
/** The deepest level a plan may use. */
export const MAX_LEVEL = NFT_MAX_LEVEL - LEVEL_MARGIN;

/** The chains among `chains` that a rule jumps or goes to. */
function targets(rule: string, chains: ReadonlySet<string>): string[] {
  const out: string[] = [];
  const re = /(?:^| )-[jg] (\S+)/g;
  for (let m = re.exec(rule); m; m = re.exec(rule)) if (chains.has(m[1] as string)) out.push(m[1] as string);
  return out;
}

export interface ChainDepths {
  /** Deepest level each chain is reached at from a base chain (level 0); absent: unreachable. */
  level: ReadonlyMap<string, number>;
  /** Levels below each chain: 0 for a chain that jumps nowhere. */
  height: ReadonlyMap<string, number>;
  /** Deepest level any chain of the table is reached at (0: only the base chains). */
  deepest: number;
}

/** Levels of one table's chains as nf_tables would count them (chains form no cycle). */
export function chainDepths(table: TablePlan): ChainDepths {
  const names = new Set(table.chains.map((c) => c.name));
  // The chains each chain jumps or goes to, its rules read once (the services' render on every read).
  const below = new Map(table.chains.map((c) => [c.name, c.rules.flatMap((r) => targets(r, names))]));
  const height = new Map<string, number>();
  const heightOf = (name: string, onPath: Set<string>): number => {
    const known = height.get(name);
    if (known !== undefined) return known;
    if (onPath.has(name)) throw new Error(`chain ${name} reaches itself`);
    onPath.add(name);
    let h = 0;
    for (const t of below.get(name) ?? []) h = Math.max(h, 1 + heightOf(t, onPath));
    onPath.delete(name);
    height.set(name, h);
    return h;
  };
  // Longest path from a base chain: relax children in an order where parents come first (the
  // reverse of a depth-first finishing order).
  const order: string[] = [];
  const seen = new Set<string>();
  const visit = (name: string): void => {
    if (seen.has(name)) return;
    seen.add(name);
    for (const t of below.get(name) ?? []) visit(t);
    order.push(name);
  };
  const entries = table.jumps.flatMap((j) => targets(j.rule, names));
  for (const e of entries) visit(e);
  const level = new Map<string, number>();
  for (const e of entries) level.set(e, 1);
  for (const name of order.reverse()) {
    const l = level.get(name);
    if (l === undefined) continue;
    for (const t of below.get(name) ?? []) level.set(t, Math.max(level.get(t) ?? 0, l + 1));
  }
  for (const name of below.keys()) heightOf(name, new Set());
  let deepest = 0;
  for (const [name, l] of level) deepest = Math.max(deepest, l + (height.get(name) ?? 0));
  return { level, height, deepest };
}

/** The deepest level reached through `chain` (its level plus what hangs below it), if reached. */
export function deepestThrough(depths: ChainDepths, chain: string): number | undefined {
  const l = depths.level.get(chain);
  return l === undefined ? undefined : l + (depths.height.get(chain) ?? 0);
}
