/**
 * Issue 19: a mixed-family Prefilter with real packets in one lab, on every backend (XDP tries,
 * ip6tables/iptables raw table with inet6/inet hash:net sets, nftables ipv4_addr/ipv6_addr
 * interval sets). x/b is listed by its IPv6 address only, x/c by its IPv4 address only: over
 * IPv6, x/b reaches no pod on the other node, and replies from x/b to a client there are dropped
 * too (stateless); x/c reaches every other remote pod; over IPv4 the other way round. Both matrices must equal the evaluator's, and the prefilter's
 * counter must move on the node that dropped.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { compareReach, type ReachMatrix } from '../../src/calc/index.js';
import type { BackendName } from '../../src/dataplane/backend.js';
import { loadBackend } from '../../src/dataplane/registry.js';
import { converge, labDown, measureReach, type LabState } from '../../src/lab/index.js';
import { loadManifests } from '../../src/model/index.js';
import { FIXTURES_DIR } from '../fixtures/netpol-e2e/cases.js';
import { describeKernel } from '../support/kernel.js';

const LAB = 'v6pf';
const MODEL = join(FIXTURES_DIR, 'xyz', 'model.yaml');
const BACKENDS: readonly BackendName[] = ['ebpf', 'iptables', 'nftables'];
/** Denied probes wait this long; allowed ones answer in a few ms. */
const TIMEOUT_MS = 400;

describeKernel('prefilter: IPv6 and IPv4 sources listed in one Prefilter, every backend', () => {
  let state: LabState;
  let dir: string;
  let files: string[];

  const pod = (id: string): NonNullable<LabState['topology']>['pods'][number] => {
    const p = state.topology?.pods.find((x) => x.id === id);
    if (!p) throw new Error(`no pod ${id}`);
    return p;
  };

  /** The row of `from`: whether it reached each pod on another node (but `except`). */
  function remoteRow(matrix: ReachMatrix, from: string, except = ''): boolean[] {
    const node = pod(from).node;
    const others = (state.topology?.pods ?? []).filter((p) => p.node !== node && p.id !== except);
    expect(others.length).toBeGreaterThan(0);
    return others.map((p) => matrix.results[from]?.[p.id] ?? false);
  }

  async function dropsOf(backend: BackendName): Promise<number> {
    const driver = await loadBackend(backend);
    let packets = 0;
    for (const n of state.topology?.nodes ?? []) {
      const counters = await driver.counters({ scope: LAB, node: n.name, netns: n.netns });
      packets += counters.find((c) => c.rule === 'prefilter/blocklist')?.packets ?? 0;
    }
    return packets;
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sy-v6pf-'));
    await labDown(LAB).catch(() => undefined);
    state = (
      await converge({
        name: LAB,
        model: loadManifests([MODEL]),
        files: [MODEL],
        mode: 'up',
        backend: 'nftables',
        nodeCount: 2,
        agents: false,
      })
    ).state;
    const listed6 = pod('x/b').addressV6;
    if (!listed6) throw new Error('x/b has no IPv6 address');
    const prefilter = join(dir, 'prefilter.yaml');
    writeFileSync(
      prefilter,
      `apiVersion: switchyard.dev/v1alpha1
kind: Prefilter
metadata: { name: blocklist }
spec:
  cidrs: [${listed6}/128, ${pod('x/c').address}/32, fd00:5957:ffff::/48, 198.18.250.0/24]
`,
    );
    files = [MODEL, prefilter];
  }, 180_000);

  afterAll(async () => {
    try {
      await labDown(LAB);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  for (const backend of BACKENDS) {
    it(`${backend}: drops the listed source of each family, passes the other, counts the drops`, async () => {
      state = (
        await converge({ name: LAB, model: loadManifests(files), files, mode: 'up', backend, agents: false })
      ).state;
      expect(state.backend).toBe(backend);
      const before = await dropsOf(backend);

      const six = await measureReach(LAB, { port: 80, protocol: 'TCP', family: 6, timeoutMs: TIMEOUT_MS });
      expect(compareReach(six.matrix, six.predicted).mismatches).toEqual([]);
      expect(remoteRow(six.matrix, 'x/b').every((v) => !v)).toBe(true);
      // Replies from a listed address are dropped too: x/c reaches every remote pod but x/b.
      expect(remoteRow(six.matrix, 'x/c', 'x/b').every((v) => v)).toBe(true);
      expect(six.matrix.results['x/c']?.['x/b']).toBe(pod('x/c').node === pod('x/b').node);
      const afterSix = await dropsOf(backend);
      expect(afterSix).toBeGreaterThan(before);

      const four = await measureReach(LAB, { port: 80, protocol: 'TCP', family: 4, timeoutMs: TIMEOUT_MS });
      expect(compareReach(four.matrix, four.predicted).mismatches).toEqual([]);
      expect(remoteRow(four.matrix, 'x/c').every((v) => !v)).toBe(true);
      expect(remoteRow(four.matrix, 'x/b', 'x/c').every((v) => v)).toBe(true);
      expect(await dropsOf(backend)).toBeGreaterThan(afterSix);
    }, 300_000);
  }
});
