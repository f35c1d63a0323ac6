/**
 * `lab reach` tells a connection policy drops (a timeout: `denied`) from one nobody answers (a
 * reset or ICMP port unreachable: `unserved`), on TCP and UDP, and compares the measured matrix
 * with the prediction: the README's walkthrough lab on nftables, where shop/db serves only 5432
 * and outside/client only 80.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { join } from 'node:path';
import { describeKernel } from '../support/kernel.js';
import { cli, cliOk, REPO } from './lab-harness.js';

const LAB = `trr${process.pid % 10000}`;
const FILES = [join(REPO, 'examples', 'walkthrough'), join(REPO, 'examples', 'global')];

interface ReachJson {
  outcomes: Record<string, Record<string, string>>;
  results: Record<string, Record<string, boolean>>;
  summary: { pairs: number; allowed: number; denied: number; unserved: number; mismatches: number };
  mismatches: unknown[];
}

describeKernel('lab reach: denied by policy vs nothing serves the port', () => {
  beforeAll(async () => {
    await cliOk(['lab', 'up', ...FILES, '--backend', 'nftables', '--name', LAB]);
  }, 120_000);
  afterAll(async () => {
    await cli(['lab', 'down', '--name', LAB]);
  }, 60_000);

  for (const protocol of ['TCP', 'UDP'] as const) {
    it(`${protocol}: measured outcomes equal the prediction, both kinds of "no" apart`, async () => {
      const out = await cliOk([
        'lab',
        'reach',
        '--name',
        LAB,
        '--port',
        '5432',
        '--protocol',
        protocol,
        '--json',
      ]);
      const r = JSON.parse(out) as ReachJson;
      const db = protocol === 'TCP' ? 'allowed' : 'denied'; // db-from-backend allows 5432/TCP only
      expect(r.outcomes['shop/backend']?.['shop/db']).toBe(db);
      expect(r.outcomes['outside/client']?.['shop/db']).toBe('denied'); // GlobalPolicy protect-db
      expect(r.outcomes['shop/backend']?.['outside/client']).toBe('unserved'); // the client serves 80 only
      expect(r.results['shop/backend']?.['outside/client']).toBe(false);
      expect(r.mismatches).toEqual([]);
      expect(r.summary.pairs).toBe(16);
      expect(r.summary.allowed + r.summary.denied + r.summary.unserved).toBe(16);
      expect(r.summary.denied).toBeGreaterThan(0);
      expect(r.summary.unserved).toBeGreaterThan(0);
    }, 60_000);
  }

  it('prints the grid, the legend and a summary line', async () => {
    const lines = (await cliOk(['lab', 'reach', '--name', LAB, '--port', '5432'])).trimEnd().split('\n');
    expect(lines[0]).toBe(`TCP/5432 measured in lab ${LAB}, compared with the prediction`);
    expect(lines.find((l) => l.startsWith('shop/backend '))?.split(/\s+/)).toEqual([
      'shop/backend',
      '-',
      '-',
      '.',
      'X',
    ]);
    expect(lines).toContain(
      '. allowed   X denied by policy   - allowed, but nothing serves the port   ! differs from the prediction',
    );
    expect(lines.at(-1)).toMatch(
      /^16 pairs probed: 2 allowed, 8 denied, 6 unserved; 0 mismatches with the prediction \(\d+ ms\)$/,
    );
  }, 60_000);
});
