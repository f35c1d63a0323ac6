/**
 * Applies a node plan so that, at every moment, the kernel holds either the old rules or the new
 * ones:
 *   1. one ipset restore: changed sets built complete under temporary names (new sets created
 *      empty), then swapped in, each atomically — the temporary names now hold the old members;
 *      decision-table sets are named after their members, so a change is a new set, built in
 *      place, and the old one is obsolete (destroyed in 3);
 *   2. iptables-restore --noflush per family (IPv4 and IPv6 side by side), only the changed
 *      chains; obsolete chains are deleted in the same table transaction once nothing refers to them;
 *   3. the old members and obsolete sets destroyed.
 * A failure in 1–2 undoes what already happened (tables committed earlier are restored from the
 * iptables-save snapshot taken first, sets swapped back) and raises ApplyError with the failing
 * line of the script that failed.
 */
import { performance } from 'node:perf_hooks';
import { ApplyError, type ApplyResult } from '../backend.js';
import { runInNetns, scriptContext, type ToolResult } from '../exec.js';
import { diffPlan, type PlanDiff, type TableDiff } from './diff.js';
import {
  destroySets,
  failingLine,
  readKernelState,
  tool,
  type IptablesMode,
  type KernelState,
} from './kernel.js';
import { FAMILIES, tmpSetName } from './names.js';
import type { ChainRules, NodePlan, TableFallback } from './plan.js';
import {
  deltaScript,
  destroyScript,
  fillScript,
  swappedSets,
  swapScript,
  undoDeltaScript,
} from './render-sets.js';
import { restoreScript, type TableChange } from './script.js';

/** `ipset` (build and swap), `iptables` or `ip6tables` (all tables of that family). */
export type ScriptStage = string;

export interface ApplyOptions {
  mode: IptablesMode;
  /** Test hook: rewrites a script right before it runs (to prove a broken plan changes nothing). */
  transformScript?: (stage: ScriptStage, script: string) => string;
  /** What the kernel holds of ours, when the caller knows (its shadow): then nothing is read. */
  kernel?: KernelState;
}

interface ScriptRun {
  script: string;
  result: ToolResult;
}

async function runScript(
  netns: string,
  opts: ApplyOptions,
  stage: ScriptStage,
  cmd: string,
  args: string[],
  script: string,
): Promise<ScriptRun> {
  const text = opts.transformScript ? opts.transformScript(stage, script) : script;
  return { script: text, result: await runInNetns(netns, cmd, args, text) };
}

/**
 * iptables-nft checks jump targets when the table commits and then reports the COMMIT line; the
 * error quotes the culprit ("Chain 'X' does not exist"), so point at the rule of that table
 * section that names it instead.
 */
export function culpritLine(script: string, line: number | undefined, stderr: string): number | undefined {
  const lines = script.split('\n');
  if (line === undefined || lines[line - 1]?.trim() !== 'COMMIT') return line;
  const quoted = /'([^']+)'/.exec(stderr)?.[1];
  if (!quoted) return line;
  for (let i = line - 2; i >= 0 && !lines[i]?.startsWith('*'); i--) {
    if (` ${lines[i] ?? ''} `.includes(` ${quoted} `)) return i + 1;
  }
  return line;
}

function failure(what: string, run: ScriptRun, extra = ''): ApplyError {
  const line = culpritLine(run.script, failingLine(run.result.stderr), run.result.stderr);
  const context = line !== undefined ? `\n${scriptContext(run.script, line)}` : '';
  return new ApplyError(
    `iptables: ${what} failed${line !== undefined ? ` at line ${line}` : ''}; the previous rules are still in force${extra}`,
    'iptables',
    `${run.result.stderr.trim() || run.result.stdout.trim()}${context}`,
  );
}

function restoreArgs(): string[] {
  // -w: legacy iptables serialises on a host-wide lock, shared with every other namespace.
  return ['--noflush', '-w', '10'];
}

/** The change that puts a committed table back as the snapshot had it. */
function undoChange(kernel: KernelState, applied: TableDiff): TableChange {
  const saved = kernel.tables.get(applied.key);
  const before = saved?.chains ?? new Map<string, ChainRules>();
  const touched = [...applied.change.write.map((c) => c.name), ...applied.change.deleteChains];
  return {
    write: touched.filter((n) => before.has(n)).map((n) => ({ name: n, rules: before.get(n)?.rules ?? [] })),
    deleteChains: applied.change.write.map((c) => c.name).filter((n) => !before.has(n)),
    insertJumps: applied.change.deleteJumps,
    deleteJumps: applied.change.insertJumps,
  };
}

/**
 * `created`: the sets the failed ipset run did create (undefined: every one of the plan's, the run
 * having succeeded): a set whose `create` failed is someone else's under that name, left alone.
 */
async function undoSets(
  netns: string,
  diff: PlanDiff,
  swapped: number,
  deltaLines: number,
  created?: ReadonlySet<string>,
): Promise<string[]> {
  const problems: string[] = [];
  const undoDeltas = undoDeltaScript(diff.deltas, deltaLines);
  if (undoDeltas) {
    const r = await runInNetns(netns, 'ipset', ['restore'], undoDeltas);
    if (r.code !== 0) problems.push(`taking member changes back failed: ${r.stderr.trim()}`);
  }
  const swappable = swappedSets(diff.sets, diff.missingSets);
  // A set that did not exist before is destroyed below rather than swapped back.
  const back = swapScript(swappable.slice(0, swapped).filter((s) => !diff.missingSets.has(s.name)));
  if (back) {
    const r = await runInNetns(netns, 'ipset', ['restore'], back);
    if (r.code !== 0) problems.push(`swapping sets back failed: ${r.stderr.trim()}`);
  }
  const ours = [...swappable.map((s) => tmpSetName(s.name)), ...diff.missingSets];
  const failed = await destroySets(
    netns,
    ours.filter((n) => created === undefined || created.has(n)),
  );
  for (const [name, why] of failed) problems.push(`could not destroy ${name}: ${why}`);
  return problems;
}

async function undoTables(
  netns: string,
  opts: ApplyOptions,
  kernel: KernelState,
  committed: TableDiff[],
): Promise<string[]> {
  const problems: string[] = [];
  for (const t of [...committed].reverse()) {
    const script = restoreScript(t.table, undoChange(kernel, t));
    const r = await runInNetns(netns, tool(opts.mode, t.family, 'restore'), restoreArgs(), script);
    if (r.code !== 0) problems.push(`restoring ${t.key} failed: ${r.stderr.trim()}`);
  }
  return problems;
}

function rollbackNote(problems: string[]): string {
  return problems.length ? `\nROLLBACK INCOMPLETE, the node may hold a mix:\n  ${problems.join('\n  ')}` : '';
}

/** Tables of one family whose COMMIT precedes the failing line: iptables-restore commits per table. */
function committedBefore(script: string, line: number | undefined, tables: TableDiff[]): TableDiff[] {
  if (line === undefined) return [];
  const out: TableDiff[] = [];
  let current: string | undefined;
  script.split('\n').forEach((text, i) => {
    if (text.startsWith('*')) current = text.slice(1).trim();
    else if (text.trim() === 'COMMIT' && i + 1 < line) {
      const t = tables.find((d) => d.table === current);
      if (t) out.push(t);
    }
  });
  return out;
}

/**
 * Sets: build under temporary names, then swap; sets of the same shape change member by member
 * instead (deltaScript). One ipset restore stops at its first error; what ran before it is taken
 * back. After a swap the temporary name holds the old members, referenced by nothing (swap
 * exchanges references too). They go in the same run when no later step can fail and need them
 * back: for a set that did not exist before (its old members are nothing), or when no table
 * changes. Returns the temporary sets still to destroy once the tables are in.
 */
async function applySets(
  netns: string,
  diff: PlanDiff,
  opts: ApplyOptions,
  changed: string[],
): Promise<string[]> {
  const setsOnly = diff.tables.length === 0;
  const fill = fillScript(diff.sets, diff.missingSets, diff.leftoverTmpSets);
  const delta = deltaScript(diff.deltas);
  const swappable = swappedSets(diff.sets, diff.missingSets);
  const tmps = swappable.map((s) => tmpSetName(s.name));
  if (!fill && !delta) return tmps;
  const swap = swapScript(swappable);
  const early = swappable
    .filter((s) => setsOnly || diff.missingSets.has(s.name))
    .map((s) => tmpSetName(s.name));
  const lines = (text: string): number => text.split('\n').length - 1;
  const swapEnd = lines(fill) + lines(swap);
  const deltaEnd = swapEnd + lines(delta);
  const run = await runScript(
    netns,
    opts,
    'ipset',
    'ipset',
    ['restore'],
    fill + swap + delta + destroyScript(early),
  );
  const line = failingLine(run.result.stderr) ?? 0;
  if (run.result.code !== 0 && line <= deltaEnd) {
    const swapped = Math.min(swappable.length, Math.max(0, line - lines(fill) - 1));
    const problems = await undoSets(
      netns,
      diff,
      swapped,
      Math.max(0, line - swapEnd - 1),
      createdBefore(fill, line),
    );
    throw failure('ipset restore', run, rollbackNote(problems));
  }
  for (const s of diff.sets) changed.push(`ipset ${s.name}`);
  for (const d of diff.deltas) changed.push(`ipset ${d.set.name} (+${d.add.length} -${d.del.length})`);
  // A failed destroy is retried with the rest at the end.
  return run.result.code === 0 ? tmps.filter((n) => !early.includes(n)) : tmps;
}

/** The sets a fill script's `create` lines before line `line` (1-based) made. */
function createdBefore(fill: string, line: number): Set<string> {
  const out = new Set<string>();
  fill.split('\n').forEach((text, i) => {
    if (i + 1 < line && text.startsWith('create ')) out.add(text.split(' ')[1] as string);
  });
  return out;
}

/**
 * Tables: one iptables-restore per family, both families at once (independent kernel objects).
 * On a failure every table that did commit, and the swapped sets, go back to what they were.
 */
async function applyTables(
  netns: string,
  diff: PlanDiff,
  kernel: KernelState,
  opts: ApplyOptions,
  changed: string[],
): Promise<void> {
  const families = FAMILIES.map((family) => diff.tables.filter((t) => t.family === family)).filter(
    (l) => l.length,
  );
  const runs = await Promise.all(
    families.map(async (tables) => {
      const family = (tables[0] as TableDiff).family;
      const script = tables.map((t) => restoreScript(t.table, t.change)).join('');
      const cmd = tool(opts.mode, family, 'restore');
      const stage = family === 4 ? 'iptables' : 'ip6tables';
      return { tables, cmd, run: await runScript(netns, opts, stage, cmd, restoreArgs(), script) };
    }),
  );
  const failed = runs.filter((r) => r.run.result.code !== 0);
  if (failed.length > 0) {
    const committed = runs.flatMap((r) =>
      r.run.result.code === 0
        ? r.tables
        : committedBefore(r.run.script, failingLine(r.run.result.stderr), r.tables),
    );
    const problems = [
      ...(await undoTables(netns, opts, kernel, committed)),
      ...(await undoSets(netns, diff, diff.sets.length, Number.MAX_SAFE_INTEGER)),
    ];
    const first = failed[0] as (typeof failed)[number];
    throw failure(first.cmd, first.run, rollbackNote(problems));
  }
  for (const t of diff.tables) {
    for (const c of t.change.write) changed.push(`${t.key} ${c.name}`);
    for (const n of t.change.deleteChains) changed.push(`${t.key} ${n} (deleted)`);
    for (const j of t.change.insertJumps) changed.push(`${t.key} ${j.builtin} jump (inserted)`);
    for (const j of t.change.deleteJumps) changed.push(`${t.key} ${j.builtin} jump (deleted)`);
  }
}

/**
 * Rule sets that carry a table but are walked on this node, said when that is new (as the eBPF
 * backend says its own): `table-fallback:<endpoint>/<direction>: <reason>`.
 */
function reportFallbacks(next: NodePlan, previous: NodePlan | undefined, changed: string[]): void {
  const said = (f: TableFallback): string => `table-fallback:${f.endpoint}/${f.direction}: ${f.reason}`;
  const before = new Set((previous?.fallbacks ?? []).map(said));
  for (const f of next.fallbacks) if (!before.has(said(f))) changed.push(said(f));
}

/** What an apply did, and the sets it created, changed or destroyed (temporary ones too). */
export interface PlanApplyResult extends ApplyResult {
  touchedSets: string[];
}

export async function applyPlan(
  netns: string,
  next: NodePlan,
  previous: NodePlan | undefined,
  opts: ApplyOptions,
): Promise<PlanApplyResult> {
  const started = performance.now();
  const kernel = opts.kernel ?? (await readKernelState(netns, opts.mode));
  const diff = diffPlan(next, previous, kernel);
  const changed: string[] = [];
  const lateTmps = await applySets(netns, diff, opts, changed);
  await applyTables(netns, diff, kernel, opts, changed);

  // Old members and sets no rule uses any more; a failure here leaves a harmless unused set that
  // the next apply tries again, so it is reported rather than raised.
  const obsolete = [...lateTmps, ...diff.obsoleteSets];
  const notDestroyed = obsolete.length ? await destroySets(netns, obsolete) : new Map<string, string>();
  for (const n of diff.obsoleteSets) if (!notDestroyed.has(n)) changed.push(`ipset ${n} (destroyed)`);
  for (const [n, why] of notDestroyed) changed.push(`ipset ${n} (not destroyed: ${why})`);
  reportFallbacks(next, previous, changed);
  const touchedSets = [
    ...diff.sets.map((s) => s.name),
    ...swappedSets(diff.sets, diff.missingSets).map((s) => tmpSetName(s.name)),
    ...diff.deltas.map((d) => d.set.name),
    ...diff.obsoleteSets,
    ...diff.leftoverTmpSets,
  ];
  return { changed, durationMs: performance.now() - started, touchedSets };
}
