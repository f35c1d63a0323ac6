/**
 * `switchyard agent` on its own, the way one runs it on a host: manifests in a watched directory,
 * Prometheus metrics and a token-protected API on loopback, bad input that changes nothing,
 * SIGTERM that leaves the dataplane in force, and --uninstall that removes it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { AgentStatus } from '../../src/agent/agent.js';
import { agentRequest } from '../../src/agent/client.js';
import { apiSocket } from '../../src/agent/paths.js';
import { runInNetns } from '../../src/dataplane/exec.js';
import { converge, labDown, measureReach } from '../../src/lab/index.js';
import { readState } from '../../src/lab/state.js';
import { loadManifests } from '../../src/model/index.js';
import { describeKernel } from '../support/kernel.js';
import { CLI, cli, REPO } from './lab-harness.js';
import { waitUntil } from '../support/until.js';

const LAB = 'ag-std';
const WALKTHROUGH = join(REPO, 'examples', 'walkthrough');
const METRICS_PORT = 19464;
const API_PORT = 19465;
const TOKEN = 'switchyard-test-token-0123456789';

describeKernel('agent: standalone, from a directory of manifests', () => {
  let dir: string;
  let source: string;
  let stateDir: string;
  let agent: ChildProcess | undefined;
  let netns: string;

  const status = (): Promise<AgentStatus> => agentRequest<AgentStatus>(apiSocket(stateDir), '/v1/status');
  const dbReachable = async (): Promise<boolean> =>
    (await measureReach(LAB, { port: 5432, protocol: 'TCP', from: ['shop/backend'], timeoutMs: 400 })).matrix
      .results['shop/backend']?.['shop/db'] === true;
  const until = <T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> =>
    waitUntil(what, fn, timeoutMs);

  beforeAll(async () => {
    await labDown(LAB);
    const files = [WALKTHROUGH];
    // Namespaces and pods only: the agent below is what enforces policy.
    await converge({ name: LAB, model: loadManifests(files), files, mode: 'up', backend: 'none' });
    const node = readState(LAB)?.topology?.pods.find((p) => p.id === 'shop/db')?.node;
    netns = readState(LAB)?.topology?.nodes.find((n) => n.name === node)?.netns ?? '';
    dir = mkdtempSync(join(tmpdir(), 'sy-agent-'));
    source = join(dir, 'manifests');
    stateDir = join(dir, 'state');
    writeFileSync(join(dir, 'token'), `${TOKEN}\n`);
    mkdirSync(source);
    for (const f of readdirSync(WALKTHROUGH)) copyFileSync(join(WALKTHROUGH, f), join(source, f));
    agent = spawn(
      process.execPath,
      [
        CLI,
        'agent',
        '--node',
        node ?? '',
        '--backend',
        'nftables',
        '--netns',
        netns,
        '--scope',
        LAB,
        '--source',
        source,
        '--state-dir',
        stateDir,
        '--metrics',
        `127.0.0.1:${METRICS_PORT}`,
        '--listen',
        `127.0.0.1:${API_PORT}`,
        '--token-file',
        join(dir, 'token'),
      ],
      { stdio: 'ignore' },
    );
    await until('the agent', async () => ((await status()).revision ? true : undefined));
  });

  afterAll(async () => {
    if (agent && agent.exitCode === null) agent.kill('SIGKILL');
    await labDown(LAB);
    rmSync(dir, { recursive: true, force: true });
  });

  it('enforces the manifests of its directory on its node', async () => {
    const s = await status();
    expect(s.lastApply?.mode).toBe('full');
    expect(await dbReachable()).toBe(true);
    const fromClient = await measureReach(LAB, {
      port: 5432,
      protocol: 'TCP',
      from: ['outside/client'],
      timeoutMs: 400,
    });
    expect(fromClient.matrix.results['outside/client']?.['shop/db']).toBe(false);
  });

  it('serves Prometheus metrics on loopback with the kernel rule counters', async () => {
    await dbReachable();
    const text = await (await fetch(`http://127.0.0.1:${METRICS_PORT}/metrics`)).text();
    expect(text).toMatch(
      /switchyard_rule_packets_total\{[^}]*policy_kind="NetworkPolicy",policy="shop\/db-from-backend"[^}]*\} [1-9]/,
    );
    expect(text).toMatch(/switchyard_apply_duration_seconds_count\{[^}]*mode="full"[^}]*\} 1/);
    expect(text).toMatch(/switchyard_agent_process_resident_memory_bytes\{[^}]*\} \d+/);
    expect(text).toMatch(/switchyard_conntrack_entries\{[^}]*\} \d+/);
  });

  it('serves the API on loopback only with the token', async () => {
    const url = `http://127.0.0.1:${API_PORT}/v1/status`;
    expect((await fetch(url)).status).toBe(401);
    expect((await fetch(url, { headers: { authorization: 'Bearer wrong-token-wrong-token' } })).status).toBe(
      401,
    );
    const ok = await fetch(url, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as AgentStatus).netns).toBe(netns);
  });

  it('applies a change to the directory, and refuses a broken one while keeping the last good state', async () => {
    const before = (await status()).revision;
    unlinkSync(join(source, '20-allow.yaml'));
    await until('the new revision', async () => ((await status()).revision !== before ? true : undefined));
    expect((await status()).lastApply?.mode).toBe('incremental');
    expect(await dbReachable()).toBe(false);

    writeFileSync(join(source, '30-broken.yaml'), 'apiVersion: v1\nkind: Pod\nmetadata:\n  name: Bad_Name\n');
    const failed = await until('the error', async () => {
      const s = await status();
      return s.lastError ? s : undefined;
    });
    expect(failed.lastError?.stage).toBe('source');
    expect(failed.lastError?.message).toContain('30-broken.yaml');
    expect(failed.lastError?.message).toContain('metadata.name');
    expect(await dbReachable()).toBe(false);
    unlinkSync(join(source, '30-broken.yaml'));
    copyFileSync(join(WALKTHROUGH, '20-allow.yaml'), join(source, '20-allow.yaml'));
    await until('recovery', async () => {
      const s = await status();
      return !s.lastError && s.revision === before ? true : undefined;
    });
    expect(await dbReachable()).toBe(true);
  });

  it('leaves the dataplane in force on SIGTERM; --uninstall removes it', async () => {
    const exited = new Promise((r) => agent?.once('exit', r));
    agent?.kill('SIGTERM');
    await exited;
    const fromClient = await measureReach(LAB, {
      port: 5432,
      protocol: 'TCP',
      from: ['outside/client'],
      timeoutMs: 400,
    });
    expect(fromClient.matrix.results['outside/client']?.['shop/db']).toBe(false);
    expect((await runInNetns(netns, 'nft', ['list', 'table', 'inet', 'switchyard'])).code).toBe(0);

    const node = readState(LAB)?.topology?.nodes.find((n) => n.netns === netns)?.name ?? '';
    const r = await cli([
      'agent',
      '--uninstall',
      '--node',
      node,
      '--backend',
      'nftables',
      '--netns',
      netns,
      '--scope',
      LAB,
      '--state-dir',
      stateDir,
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect((await runInNetns(netns, 'nft', ['list', 'table', 'inet', 'switchyard'])).code).not.toBe(0);
    const after = await measureReach(LAB, {
      port: 5432,
      protocol: 'TCP',
      from: ['outside/client'],
      timeoutMs: 400,
    });
    expect(after.matrix.results['outside/client']?.['shop/db']).toBe(true);
  });
});
