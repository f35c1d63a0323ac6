/**
 * What this backend owns in iptables and ipset for one node — our chains, the jumps into them
 * and our sets with their members — without packet counters (nor the elements of flow sets, which
 * the kernel adds and counts itself): two equal fingerprints mean nobody changed them in between.
 * It is `<rules>.<sets>.<set headers>`: ruleset events show rule changes but no ipset change, so
 * the sets' headers and member counts (one `ipset list -t`, cheap) are also checked on their
 * own, often (iptablesSetHeaders); an added or removed member changes its set's count. The
 * full fingerprint, polled less often, also sees a member swapped for another.
 */
import { createHash } from 'node:crypto';
import { readLinesInNetns, runInNetnsOrThrow } from '../exec.js';
import { tool, type IptablesMode } from './kernel.js';
import { readLocalRoutes } from './local-routes.js';
import {
  CHAIN_PREFIX,
  FAMILIES,
  FLOW_SET_PREFIX,
  FORWARD_CHAIN,
  INPUT_CHAIN,
  POSTROUTING_CHAIN,
  PREFILTER_CHAIN,
  SERVICES_CHAIN,
  SERVICES_REJECT_CHAIN,
  SET_PREFIX,
  type Family,
} from './names.js';
import { inconsistentFingerprint } from '../backend.js';

const OURS = /SY-|\bsy-/;
const SEPARATOR = '@@switchyard-sets@@';

export async function iptablesFingerprint(netns: string, mode: IptablesMode): Promise<string> {
  const [rules, routes, sets, headers] = await Promise.all([
    rulesDigest(netns, mode),
    readLocalRoutes(netns),
    setsDigest(netns),
    iptablesSetHeaders(netns),
  ]);
  // The local routes of service addresses (local-routes.ts) belong to the rules' part.
  const withRoutes = createHash('sha256')
    .update(`${rules.digest}\n${routes.join('\n')}`)
    .digest('hex');
  const digest = `${withRoutes}.${sets}.${headers}`;
  return rules.missing.length > 0
    ? inconsistentFingerprint(`missing ${rules.missing.join(', ')}`, digest)
    : digest;
}

/** The set headers' part of a fingerprint `iptablesFingerprint` returned. */
export function setHeadersOf(fingerprint: string): string {
  return fingerprint.slice(fingerprint.lastIndexOf('.') + 1);
}

/**
 * `ipset list -t`: each set's name, type, header and member count, flow sets left out, as the
 * last part of a fingerprint has them.
 */
export async function iptablesSetHeaders(netns: string): Promise<string> {
  return headersDigest(await readSetHeaders(netns));
}

/** Whether a set's header is part of the fingerprint: ours, and not a flow set (the kernel fills those). */
export function hasCheckedHeader(name: string): boolean {
  return name.startsWith(SET_PREFIX) && !name.startsWith(FLOW_SET_PREFIX);
}

/**
 * The header lines of our sets (those hasCheckedHeader takes) by set name: of every set
 * (`ipset list -t`), or of just `names` (one `ipset restore` of `list <name> -t` lines; a name
 * that does not exist fails the read).
 */
export async function readSetHeaders(netns: string, names?: readonly string[]): Promise<Map<string, string>> {
  const listed = names
    ? await runInNetnsOrThrow(netns, 'ipset', ['restore'], names.map((n) => `list ${n} -t\n`).join(''))
    : await runInNetnsOrThrow(netns, 'ipset', ['list', '-t']);
  const out = new Map<string, string>();
  let name: string | undefined;
  for (const line of listed.stdout.split('\n')) {
    if (line.startsWith('Name: ')) {
      const listedName = line.slice('Name: '.length);
      name = hasCheckedHeader(listedName) ? listedName : undefined;
    }
    if (name !== undefined && /^(Name|Type|Header|Number of entries):/.test(line))
      out.set(name, `${out.get(name) ?? ''}${line}\n`);
  }
  return out;
}

/** The digest of set headers, by name: the same whichever order the kernel listed them in. */
export function headersDigest(headers: ReadonlyMap<string, string>): string {
  const h = createHash('sha256');
  for (const name of [...headers.keys()].sort()) h.update(headers.get(name) as string);
  return h.digest('hex');
}

/**
 * The digest of our rules, and the jumps into our entry chains that are missing: each family's
 * save read as it is printed (13 MB of text at 10k services is never held).
 */
async function rulesDigest(
  netns: string,
  mode: IptablesMode,
): Promise<{ digest: string; missing: string[] }> {
  const h = createHash('sha256');
  const missing: string[] = [];
  for (const family of FAMILIES) {
    let table = '';
    const jumps = new EntryJumps();
    await readLinesInNetns(netns, tool(mode, family, 'save'), [], (line) => {
      if (line.startsWith('*')) table = line;
      else if (OURS.test(line)) h.update(`${family} ${table} ${line.replace(/\[\d+:\d+\]/g, '')}\n`);
      jumps.line(line);
    });
    missing.push(...jumps.missing().map((j) => `${tableKeyOf(family)} ${j}`));
  }
  return { digest: h.digest('hex'), missing };
}

const tableKeyOf = (family: Family): string => (family === 4 ? 'iptables' : 'ip6tables');

/**
 * Where each of our entry chains is entered from (render-rules.ts, render-services.ts): an entry
 * chain that exists without one of these jumps is a state no apply leaves behind. The same in
 * each family: ip6tables has the same entry chains, its nat table too now that IPv6 service tables
 * are translated (rulesDigest checks each family's save on its own).
 */
const ENTRY_JUMPS: { table: string; chain: string; from: string[] }[] = [
  { table: 'filter', chain: FORWARD_CHAIN, from: ['FORWARD'] },
  { table: 'filter', chain: INPUT_CHAIN, from: ['INPUT'] },
  { table: 'raw', chain: PREFILTER_CHAIN, from: ['PREROUTING'] },
  { table: 'nat', chain: SERVICES_CHAIN, from: ['PREROUTING', 'OUTPUT'] },
  { table: 'nat', chain: POSTROUTING_CHAIN, from: ['POSTROUTING'] },
  { table: 'filter', chain: SERVICES_REJECT_CHAIN, from: ['FORWARD', 'INPUT', 'OUTPUT'] },
];

/** The jumps into our entry chains that are missing, as `table/BUILTIN->CHAIN`. */
export function missingEntryJumps(saved: string): string[] {
  const jumps = new EntryJumps();
  for (const line of saved.split('\n')) jumps.line(line);
  return jumps.missing();
}

/** missingEntryJumps over a save read a line at a time. */
class EntryJumps {
  private readonly declared = new Set<string>();
  private readonly jumps = new Set<string>();
  private table = '';

  line(line: string): void {
    if (line.startsWith('*')) this.table = line.slice(1);
    else if (line.startsWith(`:${CHAIN_PREFIX}`))
      this.declared.add(`${this.table}/${line.slice(1).split(' ')[0]}`);
    else if (line.startsWith('-A ')) {
      // Only jumps from built-in chains count, and those are few: no set entry per rule of ours.
      const from = line.slice(3).split(' ', 1)[0] ?? '';
      if (from.startsWith(CHAIN_PREFIX)) return;
      const target = / -[jg] (\S+)/.exec(line)?.[1];
      if (target) this.jumps.add(`${this.table}/${from}->${target}`);
    }
  }

  missing(): string[] {
    return ENTRY_JUMPS.filter((e) => this.declared.has(`${e.table}/${e.chain}`)).flatMap((e) =>
      e.from.map((b) => `${e.table}/${b}->${e.chain}`).filter((j) => !this.jumps.has(j)),
    );
  }
}

async function setsDigest(netns: string): Promise<string> {
  const h = createHash('sha256');
  // The kernel adds, counts and expires flow set elements all the time: only the sets' names are
  // compared, and they are never saved (a busy one holds tens of thousands of elements).
  const script = [
    `ipset list -n | grep '^${FLOW_SET_PREFIX}' || true`,
    `ipset list -n | sed -n '/^${FLOW_SET_PREFIX}/d; s/^\\(${SET_PREFIX}.*\\)$/save \\1/p' | ipset restore`,
  ].join(` && echo ${SEPARATOR} && `);
  const sets = await runInNetnsOrThrow(netns, 'sh', ['-c', script]);
  const [flowSets = '', saved = ''] = sets.stdout.split(`${SEPARATOR}\n`);
  const lines = saved
    .split('\n')
    .filter((l) => /^(create|add) sy-/.test(l))
    .concat(
      flowSets
        .split('\n')
        .filter(Boolean)
        .map((n) => `flow set ${n}`),
    )
    .sort();
  for (const l of lines) h.update(`${l}\n`);
  return h.digest('hex');
}
