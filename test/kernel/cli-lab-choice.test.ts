/**
 * The lab-selection contract on a real lab (docs/cli.md): `lab up` again without --backend keeps
 * the lab's backend (it used to switch eBPF to no enforcement), $SWITCHYARD_LAB picks the lab,
 * and a lab name nothing carries is an error listing the labs there are. One lab, one node.
 */
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { readState } from '../../src/lab/state.js';
import { describeKernel } from '../support/kernel.js';
import { namespace, networkPolicy, pod } from '../support/manifests.js';
import {
  CLI,
  cli,
  cliOk,
  leftovers,
  manifestFile,
  NOTHING_LEFT,
  type CliResult,
  type Matrix,
} from './lab-harness.js';

const LAB = 'clch';
const serve = { ports: [{ name: 'http', containerPort: 80, protocol: 'TCP' as const }] };

const FILE = manifestFile([
  namespace('app'),
  pod('app', 'client', { node: 'node-1', ...serve }),
  pod('app', 'server', { node: 'node-1', labels: { app: 'server' }, ...serve }),
  networkPolicy('app', 'deny-server', {
    podSelector: { matchLabels: { app: 'server' } },
    policyTypes: ['Ingress'],
  }),
]);

/** The CLI with $SWITCHYARD_LAB set (and nothing else naming a lab). */
function cliWithEnv(lab: string, args: readonly string[]): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, SWITCHYARD_LAB: lab },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

async function clientReachesServer(): Promise<boolean | undefined> {
  const m = JSON.parse(
    await cliOk(['lab', 'reach', '--lab', LAB, '--from', 'app/client', '--timeout', '500', '--json']),
  ) as { results: Matrix };
  return m.results['app/client']?.['app/server'];
}

describeKernel('CLI: choosing a lab, keeping its backend', () => {
  beforeAll(async () => {
    await cli(['lab', 'down', '--lab', LAB]);
    await cliOk(['lab', 'up', FILE, '--lab', LAB, '--backend', 'ebpf', '--nodes', '1']);
  }, 120_000);
  afterAll(async () => {
    await cli(['lab', 'down', '--lab', LAB]);
    expect(leftovers(LAB)).toEqual(NOTHING_LEFT);
  }, 60_000);

  it('lab up again without --backend keeps eBPF, and the policy stays enforced', async () => {
    expect(await clientReachesServer()).toBe(false);
    const again = JSON.parse(await cliOk(['lab', 'up', FILE, '--lab', LAB, '--json'])) as {
      lab: string;
      backend: string;
      changes: { backend?: unknown };
    };
    expect(again).toMatchObject({ lab: LAB, backend: 'ebpf' });
    expect(again.changes.backend).toBeUndefined();
    expect(readState(LAB)?.backend).toBe('ebpf');
    expect(await clientReachesServer()).toBe(false);
  });

  it('$SWITCHYARD_LAB chooses the lab when --lab is absent', async () => {
    const r = await cliWithEnv(LAB, ['lab', 'reach', '--from', 'app/client', '--timeout', '500', '--json']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect((JSON.parse(r.stdout) as { results: Matrix }).results['app/client']?.['app/server']).toBe(false);
    const detail = JSON.parse((await cliWithEnv(LAB, ['lab', 'counters', '--json'])).stdout) as unknown[];
    expect(detail.length).toBe(1);
  });

  it('a lab that is not up is an error (exit 1) that lists the labs there are', async () => {
    const missing = await cliWithEnv('clnope', ['lab', 'reach', '--json']);
    expect(missing.code).toBe(1);
    const err = (JSON.parse(missing.stdout) as { error: { code: string; labs: string[] } }).error;
    expect(err.code).toBe('lab-not-found');
    expect(err.labs).toContain(LAB);
    const down = await cli(['lab', 'down', '--lab', 'clnope']);
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(new RegExp(`lab 'clnope' is not up \\(--lab\\); labs up: .*\\b${LAB}\\b`));
    expect(readState(LAB)?.status).toBe('ready');
  });
});
