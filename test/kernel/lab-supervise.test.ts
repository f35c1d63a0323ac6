/**
 * Lab agents are supervised (issue 24, item 5): a SIGKILLed agent is started again, the restart is
 * counted in `node status --json` and the metrics, and an `nft flush ruleset` done while it was
 * dead is repaired by the new agent. `lab status --json` shows each node's revision in force and
 * a revision the agents could not apply as failed, not ready. `lab down` finds and stops the
 * supervisors too.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { AgentStatus } from '../../src/agent/agent.js';
import { agentRequest } from '../../src/agent/client.js';
import { apiSocket } from '../../src/agent/paths.js';
import { agentStateDir, labAgents, labSupervisors, writeDesired } from '../../src/lab/agents.js';
import { converge, labDown, measureReach } from '../../src/lab/index.js';
import { readState } from '../../src/lab/state.js';
import { loadManifests } from '../../src/model/index.js';
import { describeKernel } from '../support/kernel.js';
import { REPO } from './lab-harness.js';
import { waitUntil } from '../support/until.js';

const run = promisify(execFile);
const LAB = `${process.env.SUPERVISE_LAB_PREFIX ?? 'drs'}${process.pid % 10000}`;
const FILES = [join(REPO, 'examples', 'walkthrough')];
const CLI = join(REPO, 'bin', 'switchyard');
const HUNG_MS = 8_000;

function nodeOf(pod: string): { name: string; netns: string } {
  const s = readState(LAB);
  const p = s?.topology?.pods.find((x) => x.id === pod);
  const n = s?.topology?.nodes.find((x) => x.name === p?.node);
  if (!n) throw new Error(`no node for ${pod}`);
  return n;
}

async function reaches(from: string, to: string, port: number): Promise<boolean> {
  const r = await measureReach(LAB, { port, protocol: 'TCP', from: [from], timeoutMs: 400 });
  return r.matrix.results[from]?.[to] === true;
}

const until = <T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> =>
  waitUntil(what, fn, timeoutMs);

async function cliJson<T>(...args: string[]): Promise<T> {
  const { stdout } = await run(CLI, args, { timeout: 30_000 });
  return JSON.parse(stdout) as T;
}

describeKernel('lab agents are supervised: restarted, counted, repairing what changed meanwhile', () => {
  beforeAll(async () => {
    // The supervisors inherit it: a hung agent is killed after 8 s here instead of a minute.
    process.env.SWITCHYARD_AGENT_HUNG_MS = String(HUNG_MS);
    await labDown(LAB);
    await converge({ name: LAB, model: loadManifests(FILES), files: FILES, mode: 'up', backend: 'nftables' });
  }, 180_000);

  afterAll(async () => {
    await labDown(LAB);
    expect(labAgents(LAB)).toEqual([]);
    expect(labSupervisors(LAB)).toEqual([]);
  });

  it('runs a supervisor per node', () => {
    const nodes = readState(LAB)
      ?.topology?.nodes.map((n) => n.name)
      .sort();
    expect(
      labSupervisors(LAB)
        .map((s) => s.node)
        .sort(),
    ).toEqual(nodes);
  });

  it('restarts a SIGKILLed agent, counts it, and repairs a flush done while it was dead', async () => {
    const node = nodeOf('shop/backend');
    expect(await reaches('outside/client', 'shop/backend', 8080)).toBe(false);
    const old = labAgents(LAB).find((a) => a.node === node.name);
    if (!old) throw new Error(`no agent on ${node.name}`);
    const killed = performance.now();
    process.kill(old.pid, 'SIGKILL');
    await run('ip', ['netns', 'exec', node.netns, 'nft', 'flush', 'ruleset']);
    const restarted = await until('the agent to be restarted', async () => {
      const s = await agentRequest<AgentStatus>(apiSocket(agentStateDir(LAB, node.name)), '/v1/status');
      return s.pid !== old.pid && s.revision !== undefined ? s : undefined;
    });
    console.log(
      `SIGKILL → restarted agent with its revision in force: ${Math.round(performance.now() - killed)} ms`,
    );
    expect(restarted.restarts).toBe(1);
    expect(await reaches('outside/client', 'shop/backend', 8080)).toBe(false);
    expect(await reaches('shop/frontend', 'shop/backend', 8080)).toBe(true);

    const status = await cliJson<AgentStatus[]>('node', 'status', '--lab', LAB, '--json');
    expect(status.find((s) => s.node === node.name)?.restarts).toBe(1);
    const metrics = await agentRequest<string>(apiSocket(agentStateDir(LAB, node.name)), '/metrics');
    expect(String(metrics)).toMatch(/^switchyard_agent_restarts_total\{[^}]*\} 1$/m);
  });

  it('keeps restarting a ready agent however often it is killed (no crash loop)', async () => {
    const node = nodeOf('shop/backend');
    const socket = apiSocket(agentStateDir(LAB, node.name));
    const first = await agentRequest<AgentStatus>(socket, '/v1/status');
    // More kills than the supervisor's crash-loop limit (6 exits before ready), each once ready.
    const kills = 8;
    let pid = first.pid;
    for (let i = 0; i < kills; i++) {
      process.kill(pid, 'SIGKILL');
      const killed = pid;
      const s = await until('the agent to be restarted', async () => {
        const now = await agentRequest<AgentStatus>(socket, '/v1/status');
        return now.pid !== killed && now.revision !== undefined ? now : undefined;
      });
      pid = s.pid;
    }
    const last = await agentRequest<AgentStatus>(socket, '/v1/status');
    expect(last.restarts).toBe((first.restarts ?? 0) + kills);
    expect(labSupervisors(LAB).some((s) => s.node === node.name)).toBe(true);
  });

  it('kills and restarts an agent whose API stays silent (SIGSTOPped: alive but hung)', async () => {
    const node = nodeOf('shop/backend');
    const socket = apiSocket(agentStateDir(LAB, node.name));
    const first = await agentRequest<AgentStatus>(socket, '/v1/status');
    process.kill(first.pid, 'SIGSTOP');
    const stoppedAt = Date.now();
    const s = await until(
      'the hung agent to be replaced',
      async () => {
        const now = await agentRequest<AgentStatus>(socket, '/v1/status', { timeoutMs: 500 });
        return now.pid !== first.pid && now.revision !== undefined ? now : undefined;
      },
      HUNG_MS + 20_000,
    );
    expect(Date.now() - stoppedAt).toBeGreaterThanOrEqual(HUNG_MS - 2500);
    expect(s.restarts).toBe((first.restarts ?? 0) + 1);
    expect(() => process.kill(first.pid, 0)).toThrow();
  });

  it('shows a revision the agents cannot apply as failed, with the revision in force', async () => {
    const state = readState(LAB);
    if (!state?.revision) throw new Error('no lab revision');
    const inForce = String(state.revision);
    // A desired state no nft accepts: an address that is none.
    const ir = structuredClone(state.ir);
    const set = ir.ipSets[0];
    if (!set) throw new Error('the walkthrough has no IP set');
    set.cidrs = ['198.18.999.1/32'];
    writeDesired(LAB, { revision: String(state.revision + 1), ir });
    await until('an agent to report the failure', async () => {
      const all = await cliJson<AgentStatus[]>('node', 'status', '--lab', LAB, '--json');
      return all.some((s) => s.lastError) ? true : undefined;
    });
    const detail = await cliJson<{ status: string; nodeList: { revision?: string; state?: string }[] }>(
      'lab',
      'status',
      '--name',
      LAB,
      '--json',
    );
    expect(detail.status).toBe('failed');
    expect(detail.nodeList.some((n) => n.state === 'failed')).toBe(true);
    // A failed node keeps the revision it had; a node whose slice the bad set is not in moves on.
    for (const n of detail.nodeList.filter((x) => x.state === 'failed')) expect(n.revision).toBe(inForce);
    const list = await cliJson<{ labs: { name: string; status: string }[] }>('lab', 'status', '--json');
    expect(list.labs.find((l) => l.name === LAB)?.status).toBe('failed');
  });
});
