/**
 * What this backend owns in iptables and ipset for one node — our chains, the jumps into them
 * and our sets with their members — without packet counters (nor the elements of flow sets, which
 * the kernel adds and counts itself): two equal fingerprints mean nobody changed them in between.
 * It is `<rules>.<sets>.<set headers>`: ruleset events show rule changes but no ipset change, so
 * the sets' headers and member counts (one `ipset list -t`, cheap) are also checked on their
 * own, often (iptablesSetsUnchanged); an added or removed member changes its set's count. The
 * full fingerprint, polled less often, also sees a member swapped for another.
 */
import { createHash } from 'node:crypto';
import { runInNetnsOrThrow } from '../exec.js';
import { tool, type IptablesMode } from './kernel.js';
import { CHAIN_PREFIX, FAMILIES, FLOW_SET_PREFIX, SET_PREFIX, type Family } from './names.js';
import { inconsistentFingerprint } from '../backend.js';

const OURS = /SY-|\bsy-/;
const SEPARATOR = '@@switchyard-sets@@';

export async function iptablesFingerprint(netns: string, mode: IptablesMode): Promise<string> {
  const [rules, sets, headers] = await Promise.all([
    rulesDigest(netns, mode),
    setsDigest(netns),
    setHeadersDigest(netns),
  ]);
  const digest = `${rules.digest}.${sets}.${headers}`;
  return rules.unreferenced.length > 0
    ? inconsistentFingerprint(`no jump into ${rules.unreferenced.join(', ')}`, digest)
    : digest;
}

/** Do our ipsets (names, types, member counts) still match those `fingerprint` was taken of? */
export async function iptablesSetsUnchanged(netns: string, fingerprint: string): Promise<boolean> {
  return fingerprint.endsWith(`.${await setHeadersDigest(netns)}`);
}

/** `ipset list -t`: each set's name, type, header and member count; flow sets left out. */
async function setHeadersDigest(netns: string): Promise<string> {
  const listed = await runInNetnsOrThrow(netns, 'ipset', ['list', '-t']);
  const h = createHash('sha256');
  let ours = false;
  for (const line of listed.stdout.split('\n')) {
    if (line.startsWith('Name: ')) {
      const name = line.slice('Name: '.length);
      ours = name.startsWith(SET_PREFIX) && !name.startsWith(FLOW_SET_PREFIX);
    }
    if (ours && /^(Name|Type|Header|Number of entries):/.test(line)) h.update(`${line}\n`);
  }
  return h.digest('hex');
}

/** The digest of our rules, and our chains nothing jumps to (every chain we write is entered). */
async function rulesDigest(
  netns: string,
  mode: IptablesMode,
): Promise<{ digest: string; unreferenced: string[] }> {
  const h = createHash('sha256');
  const unreferenced: string[] = [];
  for (const family of FAMILIES) {
    const saved = await runInNetnsOrThrow(netns, tool(mode, family, 'save'), []);
    let table = '';
    for (const line of saved.stdout.split('\n')) {
      if (line.startsWith('*')) table = line;
      else if (OURS.test(line)) h.update(`${family} ${table} ${line.replace(/\[\d+:\d+\]/g, '')}\n`);
    }
    unreferenced.push(...unreferencedChains(saved.stdout).map((c) => `${tableKeyOf(family)} ${c}`));
  }
  return { digest: h.digest('hex'), unreferenced };
}

const tableKeyOf = (family: Family): string => (family === 4 ? 'iptables' : 'ip6tables');

/** Our chains (`:SY-…` declarations) that no rule of their table jumps or goes to, per table. */
export function unreferencedChains(saved: string): string[] {
  const orphans: string[] = [];
  const flush = (table: string, declared: Set<string>, referenced: Set<string>): void => {
    for (const c of declared) if (!referenced.has(c)) orphans.push(`${table}/${c}`);
  };
  let table = '';
  let declared = new Set<string>();
  let referenced = new Set<string>();
  for (const line of saved.split('\n')) {
    if (line.startsWith('*')) {
      flush(table, declared, referenced);
      table = line.slice(1);
      declared = new Set();
      referenced = new Set();
    } else if (line.startsWith(`:${CHAIN_PREFIX}`)) declared.add(line.slice(1).split(' ')[0] as string);
    else if (line.startsWith('-A '))
      for (const m of line.matchAll(/ -[jg] (\S+)/g)) referenced.add(m[1] as string);
  }
  flush(table, declared, referenced);
  return orphans;
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
