/**
 * The eBPF walk's verifier limit, predicted without a kernel: `compile --backend ebpf` (and the
 * lab, and apply) refuse a policy whose program the verifier would reject, naming the endpoint and
 * the way out, in a few lines; the same policy in table mode, or a small one, is fine.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { estimateVerifierWork, nodeLimitFindings } from '../../src/dataplane/ebpf/complexity.js';
import { nodeView } from '../../src/dataplane/ebpf/node.js';
import { policyProgram } from '../../src/dataplane/ebpf/program.js';
import { allocateWithTables } from '../../src/dataplane/ebpf/tables.js';
import { compileIR, modelOf, toYaml } from '../support/manifests.js';
import { walkLimitManifests } from '../support/walk-limit.js';

const root = join(import.meta.dirname, '..', '..');
const built = existsSync(join(root, 'dist', 'cli', 'main.js'));
const describeBuilt = built || process.env.CI === 'true' ? describe : describe.skip;

function findings(rules: number, policyMode: 'walk' | 'table' = 'walk'): string[] {
  return nodeLimitFindings(compileIR(modelOf(walkLimitManifests(rules)), { policyMode }), 'node-1');
}

describe('eBPF verifier limit prediction', () => {
  it('refuses ~600 walk rules of distinct ports on one endpoint, naming it and the way out', () => {
    const [finding, ...more] = findings(600);
    expect(more).toEqual([]);
    expect(finding).toMatch(/the ingress program of big\/server \(600 rules, walk mode\)/);
    expect(finding).toMatch(/over the kernel's limit of 1\.0M processed instructions/);
    expect(finding).toMatch(/--policy-mode table/);
  });

  it('accepts 10 rules, and 600 in table mode', () => {
    expect(findings(10)).toEqual([]);
    expect(findings(600, 'table')).toEqual([]);
  });

  it('grows quadratically with distinct narrowed ports, linearly without', () => {
    const estimate = (rules: number): number => {
      const ir = compileIR(modelOf(walkLimitManifests(rules)), { policyMode: 'walk' });
      const view = nodeView(ir, 'node-1');
      const { alloc } = allocateWithTables(view, undefined);
      const rs = view.ruleSets.find((r) => r.direction === 'ingress');
      if (!rs) throw new Error('no ingress rule set');
      return estimateVerifierWork(rs, alloc).processed;
    };
    const [a, b] = [estimate(100), estimate(200)];
    expect(b / a).toBeGreaterThan(2.5);
  });

  it('stops counting past the limit: 3,000 rules are answered in seconds at most', () => {
    const ir = compileIR(modelOf(walkLimitManifests(3000, 1)), { policyMode: 'walk' });
    const view = nodeView(ir, 'node-1');
    const { alloc } = allocateWithTables(view, undefined);
    const rs = view.ruleSets.find((r) => r.direction === 'ingress');
    if (!rs) throw new Error('no ingress rule set');
    const program = policyProgram(rs, alloc).program;
    const started = performance.now();
    const e = estimateVerifierWork(rs, alloc, program);
    // Unbounded, 3,000 rules of distinct ports would be ~10 M path steps.
    expect(performance.now() - started).toBeLessThan(5000);
    expect(e.processed).toBeGreaterThan(e.limit);
  });
});

describeBuilt('switchyard compile --backend ebpf', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'switchyard-limit-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  function compile(rules: number, ...flags: string[]): { code: number; stdout: string; stderr: string } {
    const file = join(tmp, `rules-${rules}.yaml`);
    writeFileSync(file, toYaml(walkLimitManifests(rules)));
    const r = spawnSync(
      process.execPath,
      [join(root, 'bin', 'switchyard'), 'compile', file, '--backend', 'ebpf', ...flags],
      { cwd: root, encoding: 'utf8' },
    );
    return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
  }

  it('refuses 600 walk rules with a short error that names the endpoint and suggests table mode', () => {
    const r = compile(600, '--policy-mode', 'walk');
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/node node-1: the ingress program of big\/server/);
    expect(r.stderr).toMatch(/--policy-mode table/);
    expect(r.stderr.trimEnd().split('\n').length).toBeLessThanOrEqual(3);
  });

  it('prints the plan of 10 walk rules, and of 600 in table mode', () => {
    expect(compile(10, '--policy-mode', 'walk').code).toBe(0);
    const table = compile(600, '--policy-mode', 'table');
    expect(table.stderr).toBe('');
    expect(table.code).toBe(0);
  });
});
