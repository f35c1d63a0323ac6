/**
 * What the node namespace currently holds of ours: `sy-` ipsets and, per family and table, the
 * `SY-` chains with their rules and our jumps from built-in chains, read with iptables-save.
 * Apply uses it to find what exists (and to roll back); counters and remove use the same parser.
 */
import { readLinesInNetns, runInNetns, runInNetnsOrThrow, ToolError } from '../exec.js';
import { CHAIN_PREFIX, FAMILIES, SET_PREFIX, type Family } from './names.js';
import type { ChainRules, JumpSpec, TableName } from './plan.js';
import { tableKey } from './plan.js';

/** `nft`: iptables over nf_tables (Debian's default); `legacy`: the x_tables kernel API. */
export type IptablesMode = 'nft' | 'legacy';

export function isIptablesMode(value: string): value is IptablesMode {
  return value === 'nft' || value === 'legacy';
}

/** Named explicitly so the mode never depends on where update-alternatives points `iptables`. */
export function tool(mode: IptablesMode, family: Family, what: 'restore' | 'save' | 'list'): string {
  const base = `${family === 4 ? 'iptables' : 'ip6tables'}-${mode}`;
  // Listing is the plain command (`iptables-nft -S CHAIN`), which reads one chain, not the table.
  return what === 'list' ? base : `${base}-${what}`;
}

export interface SavedRule {
  chain: string;
  /** Arguments after `-A <chain> `, as iptables-save prints them (valid iptables-restore input). */
  args: string;
  packets: number;
  bytes: number;
}

export interface SavedTable {
  family: Family;
  table: TableName;
  /** Our chains in save order, with their rules. */
  chains: Map<string, SavedRule[]>;
  /** Rules in built-in chains that jump or go to one of ours. */
  jumps: (JumpSpec & { target: string })[];
}

/**
 * A table as an apply needs it: our chains with their rules' arguments (no counters), and our
 * jumps. The shadow's tables are the chains of the plan they were applied from: no object per
 * rule (112k of them at 10k endpoints and 10k services, 10 MiB), no text of the services' rules.
 */
export interface KernelTable {
  family: Family;
  table: TableName;
  /** Our chains in save order, each with its rules' arguments (valid iptables-restore input). */
  chains: ReadonlyMap<string, ChainRules>;
  /** Rules in built-in chains that jump or go to one of ours. */
  jumps: (JumpSpec & { target: string })[];
}

export interface KernelState {
  sets: Set<string>;
  /** By tableKey(family, table); only tables holding something of ours. */
  tables: Map<string, KernelTable>;
}

/** A saved table without its counters. */
export function kernelTable(t: SavedTable): KernelTable {
  return {
    ...t,
    chains: new Map([...t.chains].map(([name, rules]) => [name, { rules: rules.map((r) => r.args) }])),
  };
}

const BUILTINS: ReadonlySet<string> = new Set<JumpSpec['builtin']>([
  'PREROUTING',
  'INPUT',
  'FORWARD',
  'OUTPUT',
  'POSTROUTING',
]);

function isBuiltin(chain: string): chain is JumpSpec['builtin'] {
  return BUILTINS.has(chain);
}
const TABLES: ReadonlySet<TableName> = new Set<TableName>(['filter', 'raw', 'nat']);

/** Target chain of a rule (`-j X` or `-g X`), if it is one of ours. */
export function ourTarget(args: string): string | undefined {
  const m = / -[jg] (SY-\S+)/.exec(` ${args}`);
  return m?.[1];
}

/** Parses `iptables-save [-c]` output: our chains of the filter, raw and nat tables. */
export function parseSave(text: string, family: Family): SavedTable[] {
  const parser = new SaveParser(family);
  for (const line of text.split('\n')) parser.line(line);
  return parser.tables();
}

/**
 * `iptables-save [-c]` output read a line at a time (parseSave, saveTables); `only`: the tables
 * kept, the other tables' lines skipped unparsed (the counters need no nat rules: 80,000 of them
 * at 10k services).
 */
class SaveParser {
  private readonly all: SavedTable[] = [];
  private current: SavedTable | undefined;

  constructor(
    private readonly family: Family,
    private readonly only: ReadonlySet<TableName> = TABLES,
  ) {}

  line(raw: string): void {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    if (line.startsWith('*')) {
      const name = line.slice(1);
      this.current = this.only.has(name as TableName)
        ? { family: this.family, table: name as TableName, chains: new Map(), jumps: [] }
        : undefined;
      if (this.current) this.all.push(this.current);
      return;
    }
    const current = this.current;
    if (!current) return;
    if (line.startsWith(':')) {
      const name = line.slice(1).split(' ')[0] ?? '';
      if (name.startsWith(CHAIN_PREFIX)) current.chains.set(name, []);
      return;
    }
    const m = /^(?:\[(\d+):(\d+)\]\s+)?-A (\S+) ?(.*)$/.exec(line);
    if (!m) return;
    const chain = m[3] as string;
    const rule: SavedRule = { chain, args: m[4] ?? '', packets: Number(m[1] ?? 0), bytes: Number(m[2] ?? 0) };
    if (chain.startsWith(CHAIN_PREFIX)) {
      const list = current.chains.get(chain) ?? [];
      list.push(rule);
      current.chains.set(chain, list);
    } else if (isBuiltin(chain)) {
      const target = ourTarget(rule.args);
      if (target) current.jumps.push({ builtin: chain, rule: rule.args, target });
    }
  }

  tables(): SavedTable[] {
    return this.all.filter((t) => t.chains.size > 0 || t.jumps.length > 0);
  }
}

/** One family's tables as `iptables-save` prints them, read as it prints them (SaveParser). */
export async function saveTables(
  netns: string,
  mode: IptablesMode,
  family: Family,
  opts: { counters?: boolean; only?: ReadonlySet<TableName> } = {},
): Promise<SavedTable[]> {
  const parser = new SaveParser(family, opts.only);
  const counters = opts.counters ? ['-c'] : [];
  // Some tables only: each is saved on its own (`-t`), so the others are never printed or read.
  // A metrics scrape's counters skip the nat table's 13 MB at 10k services, which left ~25 MiB
  // of garbage behind each scrape, under what the agent's memory keeper compacts for.
  const runs = opts.only ? [...opts.only].map((t) => [...counters, '-t', t]) : [counters];
  for (const args of runs)
    await readLinesInNetns(netns, tool(mode, family, 'save'), args, (line) => parser.line(line));
  return parser.tables();
}

export async function listSets(netns: string): Promise<Set<string>> {
  const r = await runInNetnsOrThrow(netns, 'ipset', ['list', '-n']);
  return new Set(
    r.stdout
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l.startsWith(SET_PREFIX)),
  );
}

const SEPARATOR = '@@switchyard@@';

/** One process in the namespace for all three reads: apply pays this on every call without a shadow. */
export async function readKernelState(netns: string, mode: IptablesMode): Promise<KernelState> {
  const script = ['ipset list -n', ...FAMILIES.map((f) => tool(mode, f, 'save'))].join(
    ` && echo ${SEPARATOR} && `,
  );
  const r = await runInNetns(netns, 'sh', ['-c', script]);
  if (r.code !== 0) throw new ToolError(`reading ipsets and iptables in ${netns} (${script})`, r);
  const [setText = '', ...saves] = r.stdout.split(`${SEPARATOR}\n`);
  const sets = new Set(
    setText
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l.startsWith(SET_PREFIX)),
  );
  const tables = new Map<string, KernelTable>();
  FAMILIES.forEach((family, i) => {
    for (const t of parseSave(saves[i] ?? '', family))
      tables.set(tableKey(t.family, t.table), kernelTable(t));
  });
  return { sets, tables };
}

/** Line number an iptables-restore or ipset restore error names ("line 5 failed", "Error in line 3"). */
export function failingLine(stderr: string): number | undefined {
  const m = /line:? (\d+)/i.exec(stderr);
  return m ? Number(m[1]) : undefined;
}

/**
 * Destroys sets in one `ipset restore`, retrying while the kernel still holds a reference: with
 * iptables-nft the rules that used a set release it from deferred work after their transaction
 * commits, so an immediate destroy can see "in use" for a moment. Missing sets count as destroyed.
 * Returns the sets that could not be destroyed, with why.
 */
export async function destroySets(netns: string, names: readonly string[]): Promise<Map<string, string>> {
  const failed = new Map<string, string>();
  let pending = [...names];
  let waits = 0;
  while (pending.length > 0) {
    const r = await runInNetns(netns, 'ipset', ['restore'], pending.map((n) => `destroy ${n}\n`).join(''));
    if (r.code === 0) break;
    const why = r.stderr.trim();
    const index = Math.min(Math.max((failingLine(r.stderr) ?? 1) - 1, 0), pending.length - 1);
    const name = pending[index] as string;
    const rest = pending.slice(index + 1);
    if (/does not exist/.test(why)) pending = rest;
    else if (/in use/i.test(why) && waits < 20) {
      waits++;
      await new Promise((res) => setTimeout(res, 10 * waits));
      pending = [name, ...rest];
    } else {
      failed.set(name, why);
      pending = rest;
    }
  }
  return failed;
}
