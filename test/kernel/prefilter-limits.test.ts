/**
 * Bounded prefilter loading on nftables (issue 24, item 10): a prefilter above the backend's
 * limit is refused with an error that gives the size and the limit, before the kernel is touched,
 * so the previous prefilter stays in force; a large one (300,000 entries) applies.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ApplyError, type Backend, type NodeTarget } from '../../src/dataplane/backend.js';
import { PREFILTER_ELEMENT_LIMITS, PREFILTER_LIMIT_ENV } from '../../src/dataplane/prefilter-limit.js';
import { loadBackend } from '../../src/dataplane/registry.js';
import type { IR } from '../../src/ir/types.js';
import { validateManifestTexts, formatIssue } from '../../src/model/index.js';
import { describeKernel } from '../support/kernel.js';
import { compileIR, namespace, pod, toYaml } from '../support/manifests.js';

const NETNS = `sy-bo${randomBytes(2).toString('hex')}`;
const dir = mkdtempSync(join(tmpdir(), 'sy-bo-pf-'));

/** A one-node cluster with one pod and a Prefilter whose list file holds `entries`. */
function irWith(entries: readonly string[]): IR {
  writeFileSync(join(dir, 'list.txt'), entries.join('\n') + '\n');
  const manifest = join(dir, 'cluster.yaml');
  const text = toYaml([
    namespace('shop'),
    pod('shop', 'web', { node: 'node-1' }),
    {
      apiVersion: 'switchyard.dev/v1alpha1',
      kind: 'Prefilter',
      metadata: { name: 'blocklist' },
      spec: { file: 'list.txt' },
    },
  ]);
  const { model, issues } = validateManifestTexts([{ file: manifest, text }]);
  if (!model) throw new Error(issues.map(formatIssue).join('\n'));
  return compileIR(model, { nodeCount: 1 });
}

/** `n` IPv6 hosts in fd00:5957::/32 that no two merge (every other address). */
function hosts(n: number, block = 0): string[] {
  return Array.from(
    { length: n },
    (_, i) =>
      `fd00:5957:${block.toString(16)}:${((i >> 15) & 0xffff).toString(16)}::${((2 * i) & 0xffff).toString(16)}`,
  );
}

function nft(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('ip', ['netns', 'exec', NETNS, 'nft', ...args], { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Whether the prefilter's set of `family` holds `address` (a cheap lookup, not a listing). */
function listed(ir: IR, family: 'v4' | 'v6', address: string): boolean {
  const set = `${ir.prefilters[0]?.set}-${family}`;
  return nft('get', 'element', 'inet', 'switchyard', set, `{ ${address} }`).status === 0;
}

describeKernel('prefilter size limits on nftables', () => {
  let backend: Backend;
  const target: NodeTarget = { scope: NETNS, node: 'node-1', netns: NETNS };

  beforeAll(async () => {
    backend = await loadBackend('nftables');
    const r = spawnSync('ip', ['netns', 'add', NETNS]);
    expect(r.status).toBe(0);
  });

  afterAll(() => {
    delete process.env[PREFILTER_LIMIT_ENV];
    spawnSync('ip', ['netns', 'delete', NETNS]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('above the limit: refused with the size and the limit, and the previous prefilter stays in force', async () => {
    const small = irWith(['198.18.250.0/24', 'fd00:5957:ff::1']);
    await backend.apply(target, small);
    expect(listed(small, 'v4', '198.18.250.7')).toBe(true);

    const big = irWith(hosts(2000));
    process.env[PREFILTER_LIMIT_ENV] = '1000';
    try {
      const err = await backend.apply(target, big, small).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ApplyError);
      expect((err as Error).message).toMatch(
        /nftables: the prefilters of node node-1 \(blocklist\) hold 2000 entries after merging, more than the limit of 1000 for nftables; nothing was changed/,
      );
    } finally {
      delete process.env[PREFILTER_LIMIT_ENV];
    }
    expect(listed(small, 'v4', '198.18.250.7')).toBe(true);
    expect(listed(small, 'v6', 'fd00:5957:ff::1')).toBe(true);
    expect(listed(big, 'v6', hosts(1)[0] as string)).toBe(false);
  });

  it(`300,000 entries apply (the nftables limit is ${PREFILTER_ELEMENT_LIMITS.nftables})`, async () => {
    const entries = hosts(300_000, 1);
    const large = irWith(entries);
    const result = await backend.apply(target, large);
    expect(result.changed.length).toBeGreaterThan(0);
    expect(listed(large, 'v6', entries[0] as string)).toBe(true);
    expect(listed(large, 'v6', entries[299_999] as string)).toBe(true);
    expect(listed(large, 'v4', '198.18.250.7')).toBe(false);
  }, 180_000);
});
