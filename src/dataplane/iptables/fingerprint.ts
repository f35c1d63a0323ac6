/**
 * What this backend owns in iptables and ipset for one node — our chains, the jumps into them
 * and our sets with their members — without packet counters (nor the elements of flow sets, which
 * the kernel adds and counts itself): two equal fingerprints mean nobody changed them in between.
 */
import { createHash } from 'node:crypto';
import { runInNetnsOrThrow } from '../exec.js';
import { tool, type IptablesMode } from './kernel.js';
import { FAMILIES, FLOW_SET_PREFIX, SET_PREFIX } from './names.js';

const OURS = /SY-|\bsy-/;
const SEPARATOR = '@@switchyard-sets@@';

export async function iptablesFingerprint(netns: string, mode: IptablesMode): Promise<string> {
  const h = createHash('sha256');
  for (const family of FAMILIES) {
    const saved = await runInNetnsOrThrow(netns, tool(mode, family, 'save'), []);
    let table = '';
    for (const line of saved.stdout.split('\n')) {
      if (line.startsWith('*')) table = line;
      else if (OURS.test(line)) h.update(`${family} ${table} ${line.replace(/\[\d+:\d+\]/g, '')}\n`);
    }
  }
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
