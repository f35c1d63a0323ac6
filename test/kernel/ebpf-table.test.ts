/**
 * Decision tables (table mode) of the eBPF backend with real packets in a lab: the x/y/z lab is
 * brought up walking its rules, then the IR built with policyMode 'table' is applied through the
 * backend. Real connections must pass and drop as the reference evaluator says, per-rule counters
 * (the deciding rule, the default, a Log rule) must move; then a one-rule change must be a table
 * swap alone — the same program ids on every hook, a different verdict — and switching back to
 * the walk must be a program swap on the same links.
 */
import { matrixDiff } from './nftables-lab.js';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Link } from '../../src/bpf/index.js';
import { buildIR, reachMatrix } from '../../src/calc/index.js';
import type { NodeTarget } from '../../src/dataplane/backend.js';
import { createEbpfBackend } from '../../src/dataplane/ebpf/index.js';
import { MAP } from '../../src/dataplane/ebpf/layout.js';
import { mapPinPath } from '../../src/dataplane/ebpf/maps.js';
import { readMeta } from '../../src/dataplane/ebpf/meta.js';
import { nodeDir } from '../../src/dataplane/ebpf/paths.js';
import { defaultRuleId } from '../../src/ir/rule-ids.js';
import type { IR } from '../../src/ir/types.js';
import { converge, labDown, measureReach, type LabState } from '../../src/lab/index.js';
import { loadManifests } from '../../src/model/index.js';
import { FIXTURES_DIR } from '../fixtures/netpol-e2e/cases.js';
import { describeKernel } from '../support/kernel.js';
import { globalPolicy, networkPolicy, toYaml, type Manifest } from '../support/manifests.js';

const LAB = `ebtab-${process.pid % 10000}`;
const MODEL = join(FIXTURES_DIR, 'xyz/model.yaml');
const PROBE_TIMEOUT_MS = 500;

/** x/a admits x/b on one TCP port; everything else to x/a is denied by the policy's default. */
function allowB(port: number): Manifest {
  return networkPolicy('x', 'allow-b', {
    podSelector: { matchLabels: { pod: 'a' } },
    policyTypes: ['Ingress'],
    ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'b' } } }], ports: [{ port }] }],
  });
}

/** Logs TCP to x/a, then hands on to the Kubernetes tier. */
const AUDIT = globalPolicy('audit', {
  order: 1,
  selector: { matchLabels: { pod: 'a' } },
  namespaceSelector: { matchLabels: { ns: 'x' } },
  types: ['Ingress'],
  ingress: [{ action: 'Log', protocol: 'TCP' }, { action: 'Pass' }],
});

describeKernel('ebpf table mode: real packets, counters, rule changes without reloads', () => {
  const backend = createEbpfBackend();
  let state: LabState;
  let dir: string;
  /** What the backend last applied per node. */
  let applied: IR;

  const targets = (): NodeTarget[] =>
    (state.topology?.nodes ?? []).map((n) => ({ scope: LAB, node: n.name, netns: n.netns }));

  function irOf(port: number, mode: 'table' | 'walk'): IR {
    const file = join(dir, `policy-${port}.yaml`);
    writeFileSync(file, toYaml([allowB(port), AUDIT]));
    return buildIR(loadManifests([MODEL, file]), state.allocations, { policyMode: mode });
  }

  async function applyAll(ir: IR): Promise<{ changed: string[]; ms: number }> {
    const changed: string[] = [];
    let ms = 0;
    for (const t of targets()) {
      const r = await backend.apply(t, ir, applied);
      changed.push(...r.changed);
      ms += r.durationMs;
    }
    applied = ir;
    return { changed, ms };
  }

  /** Program id per pinned tcx link, by node and pin name. */
  function programIds(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const t of targets()) {
      const links = join(nodeDir(t.scope, t.node), 'links');
      for (const name of readdirSync(links).filter((n) => n.startsWith('tcx-'))) {
        const link = Link.fromPin(join(links, name));
        out[`${t.node}/${name}`] = link.info().programId;
        link.close();
      }
    }
    return out;
  }

  async function expectReach(ir: IR, port: number): Promise<void> {
    const measured = (await measureReach(LAB, { port, protocol: 'TCP', timeoutMs: PROBE_TIMEOUT_MS })).matrix;
    expect(matrixDiff(reachMatrix(ir, port, 'TCP'), measured)).toEqual([]);
  }

  async function packets(rule: string): Promise<number> {
    let sum = 0;
    for (const t of targets())
      for (const c of await backend.counters(t)) if (c.rule === rule) sum += c.packets;
    return sum;
  }

  const nodeOfA = (): NodeTarget => {
    const node = state.topology?.pods.find((p) => p.id === 'x/a')?.node;
    const t = targets().find((x) => x.node === node);
    if (!t) throw new Error('no node for x/a');
    return t;
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sy-ebpf-table-'));
    const file = join(dir, 'policy.yaml');
    writeFileSync(file, toYaml([allowB(80), AUDIT]));
    const files = [MODEL, file];
    state = (
      await converge({
        name: LAB,
        model: loadManifests(files),
        files,
        mode: 'up',
        backend: 'ebpf',
        agents: false,
        policyMode: 'walk',
      })
    ).state;
    applied = state.backendIR ?? state.ir;
  });

  afterAll(async () => {
    try {
      await labDown(LAB);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('switches the lab from the walk to tables with a program swap on the same links', async () => {
    const before = programIds();
    const ir = irOf(80, 'table');
    expect(ir.ruleSets.every((rs) => rs.table !== undefined)).toBe(true);
    const { changed } = await applyAll(ir);
    expect(changed).toContain('table:x/a/ingress');
    expect(changed.filter((c) => c.startsWith('table-fallback:'))).toEqual([]);
    const after = programIds();
    // Same pins (BPF_LINK_UPDATE on the pinned links), new programs.
    expect(Object.keys(after).sort()).toEqual(Object.keys(before).sort());
    for (const [pin, id] of Object.entries(after)) expect(id, pin).not.toBe(before[pin]);
    const meta = readMeta(nodeDir(LAB, nodeOfA().node));
    expect(meta?.tables?.some((t) => t.endpoint === 'x/a' && t.direction === 'ingress')).toBe(true);
    expect(existsSync(mapPinPath(nodeDir(LAB, nodeOfA().node), MAP.tables))).toBe(true);
  });

  it('passes and drops real connections as the evaluator says, and moves per-rule counters', async () => {
    const ir = applied;
    const allowRule = ir.ruleSets
      .find((rs) => rs.endpoint === 'x/a' && rs.direction === 'ingress')
      ?.kubernetesRules.find((r) => r.policy.name === 'allow-b');
    const logRule = ir.ruleSets
      .find((rs) => rs.endpoint === 'x/a' && rs.direction === 'ingress')
      ?.globalRules.find((r) => r.action === 'log');
    if (!allowRule || !logRule) throw new Error('rules of x/a missing');
    const deny = defaultRuleId('x/a', 'ingress');
    const [allowBefore, denyBefore, logBefore] = [
      await packets(allowRule.id),
      await packets(deny),
      await packets(logRule.id),
    ];
    await expectReach(ir, 80);
    await expectReach(ir, 81);
    // x/b → x/a:80 allowed by the rule; every other pod → x/a (80 and 81) denied by the default
    // (and retried by TCP); every TCP packet to x/a logged by the audit rule first.
    expect(await packets(allowRule.id)).toBeGreaterThan(allowBefore);
    expect(await packets(deny)).toBeGreaterThanOrEqual(denyBefore + 15);
    expect(await packets(logRule.id)).toBeGreaterThanOrEqual(logBefore + 16);
  });

  it('applies a one-rule change as a table swap: same program ids, the verdict changes', async () => {
    const ids = programIds();
    const fingerprint = await backend.fingerprint(nodeOfA());
    const ir = irOf(81, 'table');
    const { changed, ms } = await applyAll(ir);
    console.log(`ebpf table: one-rule change applied in ${ms.toFixed(1)} ms (${targets().length} nodes)`);
    expect(changed).toContain('table:x/a/ingress');
    expect(changed.filter((c) => c.startsWith('program:'))).toEqual([]);
    expect(programIds()).toEqual(ids);
    // The trie behind x/a's table is another one: drift detection sees the contents' identity.
    expect(await backend.fingerprint(nodeOfA())).not.toBe(fingerprint);
    await expectReach(ir, 80);
    await expectReach(ir, 81);
    const measured = (await measureReach(LAB, { port: 80, protocol: 'TCP', timeoutMs: PROBE_TIMEOUT_MS }))
      .matrix;
    expect(measured.results['x/b']?.['x/a']).toBe(false);
    const now = (await measureReach(LAB, { port: 81, protocol: 'TCP', timeoutMs: PROBE_TIMEOUT_MS })).matrix;
    expect(now.results['x/b']?.['x/a']).toBe(true);
    // Nothing to do: nothing written, the same fingerprint.
    const again = await backend.fingerprint(nodeOfA());
    expect((await applyAll(ir)).changed).toEqual([]);
    expect(await backend.fingerprint(nodeOfA())).toBe(again);
  });

  it('goes back to the walk with a program swap and frees the tables', async () => {
    const ids = programIds();
    const ir = irOf(81, 'walk');
    const { changed } = await applyAll(ir);
    expect(changed).toContain('tables');
    const after = programIds();
    for (const [pin, id] of Object.entries(after)) expect(id, pin).not.toBe(ids[pin]);
    expect(readMeta(nodeDir(LAB, nodeOfA().node))?.tables).toEqual([]);
    await expectReach(ir, 81);
  });

  it('remove() takes the policy map with the node', async () => {
    const t = nodeOfA();
    await backend.remove(t);
    expect(existsSync(nodeDir(LAB, t.node))).toBe(false);
    applied = irOf(81, 'table');
    await backend.apply(t, applied);
    expect(existsSync(mapPinPath(nodeDir(LAB, t.node), MAP.tables))).toBe(true);
    await expectReach(applied, 81);
  });
});
