/**
 * The nftables backend: one `table inet switchyard` per node namespace, written as a single
 * `nft -f` transaction (the whole table the first time, only what changed afterwards).
 */
import { performance } from 'node:perf_hooks';
import { irForNode } from '../../ir/slice.js';
import type { IR } from '../../ir/types.js';
import {
  ApplyError,
  type ApplyResult,
  type Backend,
  type NodeTarget,
  type RenderedPlan,
  type RuleCounter,
} from '../backend.js';
import { missingTools, runInNetns, runInNetnsOrThrow } from '../exec.js';
import { checkPrefilterSize } from '../prefilter-limit.js';
import { createAggregateSource } from '../netfilter/aggregates.js';
import { kernelConntrack } from '../netfilter/conntrack.js';
import { watchRulesetChanges } from '../netfilter/ruleset-monitor.js';
import { runScript, tableExists } from './apply.js';
import { readCounters } from './counters.js';
import { diffRulesets } from './diff.js';
import { nftablesFingerprint } from './fingerprint.js';
import { flowCounterReader } from './flow-counters.js';
import { FAMILY, TABLE } from './names.js';
import { renderFull } from './render.js';
import type { NftRuleset } from './objects.js';
import { buildRuleset, type RulesetOptions } from './ruleset.js';
import { Shadows } from '../shadow.js';
import { memberDelta, type SetElementChange } from './member-delta.js';
import { NftablesNetlink, NftablesWriteError, type BatchMessage } from './nfnetlink.js';
import { ruleBatch } from './rule-batch.js';
import { refuseWhileFileExists } from './refusal.js';

export interface NftablesOptions {
  /**
   * Flow records: every decision and the established traffic counted in the kernel's flow sets,
   * drained by flowSource() every interval (see decision.ts, flow-sets.ts). Default true.
   */
  flowLogs?: boolean;
  /** Elements per flow set; default FLOW_SET_SIZE (tests make it tiny to see it fill). */
  flowSetSize?: number;
  /** Test hook: rewrites every script just before nft sees it (e.g. to append a broken line). */
  mutateScript?: (script: string) => string;
  /** Test hook: rewrites a members-only change just before it is sent over nfnetlink. */
  mutateMembers?: (changes: SetElementChange[]) => SetElementChange[];
  /** Test hook: rewrites a rule batch (rule-batch.ts) just before it is sent over nfnetlink. */
  mutateBatch?: (messages: BatchMessage[]) => BatchMessage[];
  /** Test hook: while this file exists, nf_tables refuses every write (refusal.ts). */
  refuseWritesWhile?: string;
}

/**
 * Writes a members-only change (member-delta.ts) as one nf_tables transaction over nfnetlink:
 * nothing of it is in force unless all of it is.
 */
function commitMembers(netns: string, node: string, changes: readonly SetElementChange[]): void {
  const nl = new NftablesNetlink(netns);
  try {
    nl.commitElements(TABLE, changes);
  } catch (e) {
    throw new ApplyError(
      `nf_tables refused the set member update for node ${node}; the previous ruleset is still in force`,
      'nftables',
      e instanceof Error ? e.message : String(e),
      { cause: e },
    );
  } finally {
    nl.close();
  }
}

/**
 * Writes a rule batch (rule-batch.ts) as one nf_tables transaction. `refused`: nf_tables said no,
 * nothing of it is in force (the caller writes the same change with `nft -f`, which names the line
 * it refuses); `unknown`: its answer was lost, the kernel holds the old table or the new one (the
 * caller writes the whole table, right either way).
 */
function commitRuleBatch(
  netns: string,
  messages: readonly BatchMessage[],
): 'committed' | 'refused' | 'unknown' {
  let nl: NftablesNetlink | undefined;
  try {
    nl = new NftablesNetlink(netns);
    nl.commitBatch(messages, 'rule update');
    return 'committed';
  } catch (e) {
    return e instanceof NftablesWriteError && !e.refused ? 'unknown' : 'refused';
  } finally {
    nl?.close();
  }
}

/** The options a backend renders with, every one decided. */
type Rendering = RulesetOptions & { flowLogs: boolean };

function rulesetFor(ir: IR, node: string, options: Rendering): NftRuleset {
  return buildRuleset(irForNode(ir, node), node, options);
}

/**
 * What each IR object rendered to when it was last applied, per node. Callers pass back the IR
 * they applied as `previous`; reusing its rendering halves the work of an update at scale (a 50k-
 * rule IR takes a few hundred ms to render) and describes what was really installed.
 */
const applied = new WeakMap<IR, Map<string, NftRuleset>>();

/** Which rendering of an IR: the node and the options that change what is rendered. */
function variant(node: string, options: Rendering): string {
  return `${node}|${options.flowLogs}|${options.flowSetSize}`;
}

function previousRuleset(previous: IR, node: string, options: Rendering): NftRuleset {
  return applied.get(previous)?.get(variant(node, options)) ?? rulesetFor(previous, node, options);
}

function remember(ir: IR, node: string, options: Rendering, rs: NftRuleset): void {
  let byNode = applied.get(ir);
  if (!byNode) applied.set(ir, (byNode = new Map()));
  byNode.set(variant(node, options), rs);
}

function allObjects(rs: NftRuleset): string[] {
  return [
    `table:${TABLE}`,
    ...rs.sets.map((s) => `set:${s.name}`),
    ...rs.maps.map((m) => `map:${m.name}`),
    ...rs.chains.map((c) => `chain:${c.name}`),
  ];
}

export function createNftablesBackend(opts: NftablesOptions = {}): Backend {
  const refusal = opts.refuseWritesWhile
    ? refuseWhileFileExists(opts.refuseWritesWhile, FAMILY, TABLE)
    : undefined;
  const mutate = opts.mutateScript ?? refusal?.mutateScript ?? ((s: string) => s);
  const mutateMembers = opts.mutateMembers ?? refusal?.mutateMembers ?? ((c: SetElementChange[]) => c);
  const mutateBatch = opts.mutateBatch ?? refusal?.mutateBatch ?? ((m: BatchMessage[]) => m);
  const rendering: Rendering = {
    flowLogs: opts.flowLogs ?? true,
    ...(opts.flowSetSize !== undefined ? { flowSetSize: opts.flowSetSize } : {}),
  };

  // What this instance wrote to each node's table last: the next apply diffs against it.
  const shadows = new Shadows<NftRuleset>();

  async function applyFull(target: NodeTarget, next: NftRuleset): Promise<string[]> {
    await runScript(target.netns, mutate(renderFull(next)), `ruleset for node ${target.node}`);
    return allObjects(next);
  }

  /**
   * Diffs against the shadow (what this instance wrote last), else against what `previous`
   * rendered to (the agent passes it only when the kernel's fingerprint is the one recorded after
   * that apply), else writes the whole table. Rendering skips unchanged IR objects by identity.
   */
  async function applyNow(target: NodeTarget, ir: IR, previous?: IR): Promise<ApplyResult> {
    const start = performance.now();
    checkPrefilterSize('nftables', ir, target.node);
    const next = rulesetFor(ir, target.node, rendering);
    const before =
      shadows.get(target) ?? (previous ? previousRuleset(previous, target.node, rendering) : undefined);
    shadows.drop(target);
    // Only set members changed (the usual label change): their elements alone, without nft.
    const members = before ? memberDelta(before, next) : undefined;
    // Rules too (a label or policy change): the chains and elements in one batch, without nft.
    const batch = before && !members ? ruleBatch(TABLE, before, next) : undefined;
    const outcome = batch ? commitRuleBatch(target.netns, mutateBatch(batch.messages)) : undefined;
    const diffed = before && !members && (outcome === undefined || outcome === 'refused');
    const plan = diffed ? diffRulesets(before, next) : undefined;
    let changed: string[];
    if (batch && outcome === 'committed') changed = batch.changed;
    else if (outcome === 'unknown') changed = await applyFull(target, next);
    else if (members) {
      try {
        if (members.length > 0) commitMembers(target.netns, target.node, mutateMembers(members));
        changed = members.map((m) => `${m.kind}:${m.name}`);
      } catch (e) {
        // No table (namespace recreated, table removed by hand): write the whole table instead.
        if (!(e instanceof ApplyError) || (await tableExists(target.netns))) throw e;
        changed = await applyFull(target, next);
      }
    } else if (!plan) changed = await applyFull(target, next);
    else if (plan.changed.length === 0) changed = [];
    else {
      try {
        await runScript(target.netns, mutate(plan.script), `update for node ${target.node}`);
        changed = plan.changed;
      } catch (e) {
        // `previous` describes a table that is not there (namespace recreated, table removed by
        // hand): the delta has nothing to apply to, so write the whole table instead.
        if (!(e instanceof ApplyError) || (await tableExists(target.netns))) throw e;
        changed = await applyFull(target, next);
      }
    }
    remember(ir, target.node, rendering, next);
    shadows.set(target, next);
    return { changed, durationMs: performance.now() - start };
  }

  return {
    name: 'nftables',

    render(ir: IR, node: string): RenderedPlan {
      return { backend: 'nftables', node, text: renderFull(rulesetFor(ir, node, rendering)) };
    },

    async apply(target: NodeTarget, ir: IR, previous?: IR): Promise<ApplyResult> {
      return shadows.guard(target, () => applyNow(target, ir, previous));
    },

    dropShadow: (target) => shadows.drop(target),

    async remove(target: NodeTarget): Promise<void> {
      shadows.drop(target);
      const r = await runInNetns(target.netns, 'nft', ['delete', 'table', FAMILY, TABLE]);
      if (r.code !== 0 && !/No such file or directory/.test(r.stderr)) {
        throw new ApplyError(
          `could not remove table ${FAMILY} ${TABLE} in ${target.netns}`,
          'nftables',
          r.stderr.trim(),
        );
      }
    },

    counters: async (target: NodeTarget): Promise<RuleCounter[]> => readCounters(target.netns, FAMILY, TABLE),

    fingerprint: (target) => nftablesFingerprint(target.netns),
    // A full apply writes the whole table in one transaction: nothing to clear first.
    prepareRepair: async () => [],
    watchChanges: async (target, onChange) => watchRulesetChanges(target, onChange),
    driftPollMs: 500,
    // Flow records are counted in the kernel (decision.ts) and read back once per interval.
    flowSource: (target, o) => {
      const read = flowCounterReader(target.netns);
      return createAggregateSource({
        name: 'nftables-flow-sets',
        target,
        read: async () => read(),
        ir: o.ir,
        ...(o.pollMs !== undefined ? { intervalMs: o.pollMs } : {}),
      });
    },
    conntrack: (target) => kernelConntrack(target),
    async checkSupport() {
      const missing = missingTools(['nft', 'conntrack']);
      return { supported: missing.length === 0, missing };
    },
    /** Deletes the whole table: every endpoint of the node loses its policy. */
    async tamper(target) {
      await runInNetnsOrThrow(target.netns, 'nft', ['delete', 'table', FAMILY, TABLE]);
      return `nft delete table ${FAMILY} ${TABLE}   (in ${target.netns})`;
    },
  };
}

export const nftablesBackend: Backend = createNftablesBackend();
