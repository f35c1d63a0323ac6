/**
 * What this backend owns in iptables and ipset for one node — our chains, the jumps into them
 * and our sets with their members — without packet counters: two equal fingerprints mean nobody
 * changed them in between.
 */
import { createHash } from 'node:crypto';
import { runInNetnsOrThrow } from '../exec.js';
import { tool, type IptablesMode } from './kernel.js';
import { FAMILIES } from './names.js';

const OURS = /SY-|\bsy-/;

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
  const sets = await runInNetnsOrThrow(netns, 'ipset', ['save']);
  const lines = sets.stdout
    .split('\n')
    .filter((l) => /^(create|add) sy-/.test(l))
    .sort();
  for (const l of lines) h.update(`${l}\n`);
  return h.digest('hex');
}
