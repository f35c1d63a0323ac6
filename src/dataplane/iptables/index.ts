/**
 * The iptables + ipset backend. Mode: `nft` (iptables over nf_tables, Debian's default) or
 * `legacy` (x_tables), from, in order: the constructor option, setIptablesMode() (the CLI's
 * `--iptables-mode`), the SWITCHYARD_IPTABLES environment variable, `nft`.
 */
import { existsSync } from 'node:fs';
import type { Endpoint, IR } from '../../ir/types.js';
import { errorMessage } from '../../util/errors.js';
import {
  ApplyError,
  type ApplyResult,
  type Backend,
  type ChangeWatch,
  type ConntrackView,
  type FlowSourceOptions,
  type NodeTarget,
  type RenderedPlan,
  type RuleCounter,
  type SupportReport,
} from '../backend.js';
import type { EventSource } from '../events.js';
import { missingTools, runInNetns, runInNetnsOrThrow } from '../exec.js';
import { checkPrefilterSize } from '../prefilter-limit.js';
import { kernelConntrack } from '../netfilter/conntrack.js';
import { createAggregateSource } from '../netfilter/aggregates.js';
import { watchRulesetChanges } from '../netfilter/ruleset-monitor.js';
import { applyPlan, type ScriptStage } from './apply.js';
import { kernelStateAfter } from './diff.js';
import { Shadows } from '../shadow.js';
import { COUNTED_TABLES, countersFromSaved } from './counters.js';
import { iptablesFingerprint, setHeadersOf } from './fingerprint.js';
import { SetHeaders } from './set-headers.js';
import { iptablesFlowReader } from './flow-counters.js';
import { localRoutePrefixes, syncLocalRoutes } from './local-routes.js';
import {
  destroySets,
  isIptablesMode,
  listSets,
  saveTables,
  tool,
  type IptablesMode,
  type KernelState,
} from './kernel.js';
import { CHAIN_PREFIX, FAMILIES } from './names.js';
import type { NodePlan } from './plan.js';
import { planForNode, planText } from './render.js';
import { restoreScript } from './script.js';

export type { IptablesMode } from './kernel.js';
export { isIptablesMode } from './kernel.js';

export const IPTABLES_MODE_ENV = 'SWITCHYARD_IPTABLES';

let modeOverride: IptablesMode | undefined;

/** For CLIs exposing `--iptables-mode`; `undefined` goes back to the environment/default. */
export function setIptablesMode(mode: IptablesMode | undefined): void {
  modeOverride = mode;
}

export function iptablesModeFromEnv(): IptablesMode {
  const value = process.env[IPTABLES_MODE_ENV];
  if (value === undefined || value === '') return 'nft';
  if (!isIptablesMode(value))
    throw new Error(`${IPTABLES_MODE_ENV} must be 'nft' or 'legacy', not '${value}'`);
  return value;
}

export interface IptablesBackendOptions {
  mode?: IptablesMode;
  /**
   * Flows: every deciding and Log rule counts what it decides in its own ipset, the established
   * path counts later packets per 4-tuple (rule-text.ts); flowSource() reads them every interval.
   * Default true; false renders no flow rules or sets at all.
   */
  flowLogs?: boolean;
  /** Test hook: elements per flow set (default FLOW_SET_MAXELEM), to see a full set at work. */
  flowSetMaxElem?: number;
  /**
   * Test hook: the deepest chain level a decision table may reach before it is walked instead
   * (default: what nf_tables allows, less a margin; see depth.ts).
   */
  maxChainLevel?: number;
  /** Test hook: rewrites a script right before apply runs it (stage `ipset`, `iptables` or `ip6tables`). */
  transformScript?: (stage: ScriptStage, script: string) => string;
}

export class IptablesBackend implements Backend {
  readonly name = 'iptables' as const;
  /** How often the whole fingerprint is polled where there are no ruleset events (legacy). */
  readonly driftPollMs = 500;
  /**
   * ipset members have no change events even where the ruleset has: the sets alone (one small
   * read) are polled at this pace, so a changed member is repaired well within a second.
   */
  readonly setsPollMs = 250;

  /** What this instance applied to each node last, and what the kernel holds of ours after it. */
  private readonly shadows = new Shadows<{
    mode: IptablesMode;
    plan: NodePlan;
    kernel: KernelState;
    /** Our local routes as the last apply left them (local-routes.ts): not read again. */
    routes?: readonly string[];
  }>();

  /** Each node's set headers as last read, kept up to date by our applies (set-headers.ts). */
  private readonly setHeaders = new Map<string, SetHeaders>();

  constructor(private readonly options: IptablesBackendOptions = {}) {}

  private headersOf(target: NodeTarget): SetHeaders {
    let h = this.setHeaders.get(target.netns);
    if (!h) this.setHeaders.set(target.netns, (h = new SetHeaders(target.netns)));
    return h;
  }

  get mode(): IptablesMode {
    return this.options.mode ?? modeOverride ?? iptablesModeFromEnv();
  }

  render(ir: IR, node: string): RenderedPlan {
    return { backend: 'iptables', node, text: planText(this.plan(ir, node), this.mode) };
  }

  private plan(ir: IR, node: string): NodePlan {
    return planForNode(ir, node, {
      flowLogs: this.options.flowLogs ?? true,
      ...(this.options.flowSetMaxElem !== undefined ? { flowSetMaxElem: this.options.flowSetMaxElem } : {}),
      ...(this.options.maxChainLevel !== undefined ? { maxLevel: this.options.maxChainLevel } : {}),
    });
  }

  /**
   * Diffs against the shadow (the plan this instance applied last, and the kernel as it left it:
   * no iptables-save, no set listing), else against `previous` and one read of the kernel.
   */
  async apply(target: NodeTarget, ir: IR, previous?: IR): Promise<ApplyResult> {
    return this.shadows.guard(target, () => this.applyNow(target, ir, previous));
  }

  dropShadow(target: NodeTarget): void {
    this.shadows.drop(target);
    this.headersOf(target).forget();
  }

  private async applyNow(target: NodeTarget, ir: IR, previous?: IR): Promise<ApplyResult> {
    checkPrefilterSize('iptables', ir, target.node);
    const kept = this.shadows.get(target);
    this.shadows.drop(target);
    const shadow = kept?.mode === this.mode ? kept : undefined;
    let next;
    let prev;
    try {
      next = this.plan(ir, target.node);
      prev = shadow?.plan ?? (previous ? this.plan(previous, target.node) : undefined);
    } catch (e) {
      throw new ApplyError(
        `iptables: cannot render node ${target.node}: ${errorMessage(e)}`,
        'iptables',
        undefined,
        { cause: e },
      );
    }
    // A set the shadow does not have is created without `-exist`: a foreign set under that name
    // fails the ipset run at its `create` line, and the undo leaves alone what it did not create
    // (no `ipset list -n` on every change that names a new flow set: 20–55 ms at 10k endpoints).
    const kernel = shadow?.kernel;
    const headers = this.headersOf(target);
    // Without a shadow the kernel may hold anything: its set headers are read whole next time.
    if (!kernel) headers.forget();
    const { touchedSets, ...result } = await applyPlan(target.netns, next, prev, {
      mode: this.mode,
      ...(this.options.transformScript ? { transformScript: this.options.transformScript } : {}),
      ...(kernel ? { kernel } : {}),
    }).catch((e: unknown) => {
      headers.forget();
      throw e;
    });
    headers.touch(touchedSets);
    // A set that could not be destroyed is still there: the next apply reads the kernel for it.
    if (!result.changed.some((c) => c.includes('(not destroyed'))) {
      this.shadows.set(target, { mode: this.mode, plan: next, kernel: kernelStateAfter(next) });
    } else headers.forget();
    // After the rules: a route only decides whether an untranslated packet reaches SY-SVC-REJECT.
    // The shadow's routes stand in for `ip route show`; without a shadow the kernel is read.
    const wanted = localRoutePrefixes(ir);
    const routes = await syncLocalRoutes(target.netns, wanted, shadow?.routes);
    const written = this.shadows.get(target);
    if (written) this.shadows.set(target, { ...written, routes: wanted });
    return { ...result, changed: [...result.changed, ...routes] };
  }

  /**
   * Our jumps, chains (both families, both iptables flavours: a lab may have switched modes) and
   * sets go; a namespace that no longer exists has nothing to remove.
   */
  async remove(target: NodeTarget): Promise<void> {
    this.dropShadow(target);
    if (!existsSync(`/run/netns/${target.netns}`)) return;
    for (const mode of [this.mode, otherMode(this.mode)]) {
      for (const family of FAMILIES) {
        for (const t of await saveTables(target.netns, mode, family)) {
          const script = restoreScript(t.table, {
            write: [],
            deleteChains: [...t.chains.keys()],
            insertJumps: [],
            deleteJumps: t.jumps,
          });
          const r = await runInNetns(
            target.netns,
            tool(mode, family, 'restore'),
            ['--noflush', '-w', '10'],
            script,
          );
          if (r.code !== 0)
            throw new ApplyError(
              `iptables: removing from ${target.netns} failed`,
              'iptables',
              `${r.stderr.trim()}\n${script}`,
            );
        }
      }
    }
    await syncLocalRoutes(target.netns, []);
    const failed = await destroySets(target.netns, [...(await listSets(target.netns))]);
    if (failed.size > 0)
      throw new ApplyError(
        `iptables: could not destroy ipsets in ${target.netns}`,
        'iptables',
        [...failed].map(([n, why]) => `${n}: ${why}`).join('\n'),
      );
  }

  async counters(target: NodeTarget): Promise<RuleCounter[]> {
    const tables = await Promise.all(
      FAMILIES.map((f) => saveTables(target.netns, this.mode, f, { counters: true, only: COUNTED_TABLES })),
    );
    return countersFromSaved(tables.flat());
  }

  fingerprint(target: NodeTarget): Promise<string> {
    return iptablesFingerprint(target.netns, this.mode);
  }

  /** A full restore rewrites every chain and set: nothing to clear first. */
  async prepareRepair(): Promise<string[]> {
    return [];
  }

  /** The nf_tables flavour has ruleset events; legacy x_tables has none (polling covers it). */
  async watchChanges(target: NodeTarget, onChange: () => void): Promise<ChangeWatch | undefined> {
    if (this.mode === 'legacy') return undefined;
    return {
      ...watchRulesetChanges(target, onChange),
      unwatched: {
        everyMs: this.setsPollMs,
        read: () => this.headersOf(target).readAll(),
        // Sets our apply did not touch are as the last read saw them; without a shadow, read all.
        readAfterApply: () => {
          const sets = this.shadows.get(target)?.kernel.sets;
          return sets ? this.headersOf(target).readAfterApply(sets) : this.headersOf(target).readAll();
        },
        partOf: setHeadersOf,
      },
    };
  }

  /** The flow sets' counters, read every interval and turned into aggregates (netfilter/aggregates.ts). */
  flowSource(target: NodeTarget, opts: FlowSourceOptions): EventSource {
    return createAggregateSource({
      name: 'iptables-flow-sets',
      target,
      read: iptablesFlowReader(target.netns, () => this.mode),
      ir: opts.ir,
      ...(opts.pollMs !== undefined ? { intervalMs: opts.pollMs } : {}),
    });
  }

  conntrack(target: NodeTarget): ConntrackView {
    return kernelConntrack(target);
  }

  async checkSupport(): Promise<SupportReport> {
    const mode = this.mode;
    const missing = missingTools([tool(mode, 4, 'restore'), tool(mode, 6, 'restore'), 'ipset', 'conntrack']);
    return { supported: missing.length === 0, missing };
  }

  /** Deletes the FORWARD jump into our chains: every endpoint of the node loses its policy. */
  async tamper(target: NodeTarget, _endpoint: Endpoint): Promise<string> {
    const saved = await runInNetnsOrThrow(target.netns, tool(this.mode, 4, 'save'), ['-t', 'filter']);
    const jump = saved.stdout
      .split('\n')
      .find((l) => l.startsWith('-A FORWARD ') && l.includes(`-j ${CHAIN_PREFIX}`));
    if (!jump) throw new Error(`no jump into our chains in ${target.netns}: nothing to tamper with`);
    const rule = jump.slice('-A '.length);
    const script = `*filter\n-D ${rule}\nCOMMIT\n`;
    await runInNetnsOrThrow(target.netns, tool(this.mode, 4, 'restore'), ['--noflush', '-w', '10'], script);
    return `iptables -D ${rule}   (in ${target.netns})`;
  }
}

function otherMode(mode: IptablesMode): IptablesMode {
  return mode === 'nft' ? 'legacy' : 'nft';
}

export const iptablesBackend = new IptablesBackend();
