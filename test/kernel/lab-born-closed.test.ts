/**
 * New endpoints are born closed (issue 24, items 1–3): a denied client that connects every few
 * milliseconds to a pod's address never gets through while `lab apply` adds that pod, when the
 * apply fails, or when it is SIGKILLed half-way and the next apply recovers. One lab, three backends.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { availableBackends } from '../../src/dataplane/registry.js';
import { labAgents } from '../../src/lab/agents.js';
import { readState } from '../../src/lab/state.js';
import { describeKernel } from '../support/kernel.js';
import { namespace, networkPolicy, pod, type Manifest } from '../support/manifests.js';
import { cgroup2, cli, cliOk, CLI, manifestFile, startCli, type Matrix } from './lab-harness.js';

const LAB = 'clbc';
/**
 * While this file exists the lab's nftables agents write nothing the kernel accepts (their
 * backend adds a step nf_tables refuses to every transaction: src/dataplane/nftables/refusal.ts).
 * The agents inherit the variable from `lab up`.
 */
const REFUSE_WRITES = `/run/switchyard/sy-${LAB}-refuse-writes`;
process.env.SWITCHYARD_TEST_REFUSE_WRITES = REFUSE_WRITES;
const PORT = 8080;
const OLD_IP = '198.18.7.10';
const serve = { ports: [{ name: 'http', containerPort: PORT, protocol: 'TCP' as const }] };

/** Two client pods (node-1), one old server and `extra` new servers in a default-deny namespace. */
function world(extra: readonly { name: string; ip: string }[], more: readonly Manifest[] = []): string {
  return manifestFile([
    namespace('app', { ns: 'app' }),
    namespace('cli', { ns: 'cli' }),
    pod('cli', 'denied', { labels: { role: 'denied' }, ip: '198.18.7.2', node: 'node-1' }),
    pod('cli', 'allowed', { labels: { role: 'ok' }, ip: '198.18.7.3', node: 'node-1' }),
    pod('app', 'old', { labels: { app: 'srv' }, ip: OLD_IP, node: 'node-2', ...serve }),
    // New pods on the other node than the clients: the route to them is what opens a window.
    ...extra.map((e) => pod('app', e.name, { labels: { app: 'srv' }, ip: e.ip, node: 'node-2', ...serve })),
    networkPolicy('app', 'default-deny', { podSelector: {}, policyTypes: ['Ingress'] }),
    networkPolicy('app', 'allow-ok', {
      podSelector: {},
      ingress: [
        {
          from: [
            {
              namespaceSelector: { matchLabels: { ns: 'cli' } },
              podSelector: { matchLabels: { role: 'ok' } },
            },
          ],
          ports: [{ port: PORT, protocol: 'TCP' }],
        },
      ],
    }),
    ...more,
  ]);
}

/** Connects to each target every 2 ms from inside `from` (its netns and cgroup); prints what got through. */
const PROBER = `
const net = require('node:net');
const targets = JSON.parse(process.argv[1]);
const hits = [];
const failures = {};
let attempts = 0, open = 0;
const started = Date.now();
setInterval(() => {
  for (const t of targets) {
    if (open > 60) return;
    open++; attempts++;
    const s = net.connect({ host: t.address, port: t.port });
    s.setTimeout(150);
    s.on('connect', () => { hits.push({ target: t.address, at: Date.now() - started }); s.destroy(); });
    s.on('timeout', () => { failures.timeout = (failures.timeout ?? 0) + 1; s.destroy(); });
    s.on('error', (e) => { failures[e.code] = (failures[e.code] ?? 0) + 1; });
    s.on('close', () => open--);
  }
}, 2);
process.stdout.write('probing ' + process.pid + '\\n');
process.on('SIGTERM', () => { process.stdout.write(JSON.stringify({ attempts, hits, failures }) + '\\n'); process.exit(0); });
`;

interface ProbeReport {
  attempts: number;
  /** Failed connections by how they failed (timeout, ECONNREFUSED, EHOSTUNREACH, …). */
  failures: Record<string, number>;
  hits: { target: string; at: number }[];
}

interface Prober {
  stop(): Promise<ProbeReport>;
}

async function startProber(
  from: string,
  targets: readonly { address: string; port: number }[],
): Promise<Prober> {
  const child: ChildProcess = spawn(
    process.execPath,
    [CLI, 'lab', 'exec', '--name', LAB, from, '--', process.execPath, '-e', PROBER, JSON.stringify(targets)],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  const closed = new Promise<void>((resolve) => child.on('close', () => resolve()));
  const deadline = Date.now() + 20_000;
  while (!/probing \d+\n/.test(out)) {
    if (Date.now() > deadline) throw new Error('the prober did not start');
    await new Promise((r) => setTimeout(r, 10));
  }
  const pid = Number(/probing (\d+)/.exec(out)?.[1]);
  return {
    async stop() {
      // `lab exec` runs the prober as its child: signal the prober itself.
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        throw new Error('the prober died: its pod was removed (the lab was rebuilt)');
      }
      await closed;
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (!line) throw new Error(`the prober printed no report: ${out}`);
      return JSON.parse(line) as ProbeReport;
    },
  };
}

/** How long a denied pair stayed open: first to last connection that got through (0 when none did). */
function openMs(r: ProbeReport): number {
  if (r.hits.length === 0) return 0;
  return Math.max(...r.hits.map((h) => h.at)) - Math.min(...r.hits.map((h) => h.at)) + 2;
}

async function reachFrom(client: string): Promise<Record<string, boolean>> {
  const args = [
    'lab',
    'reach',
    '--name',
    LAB,
    '--json',
    '--from',
    client,
    '--port',
    String(PORT),
    '--timeout',
    '300',
  ];
  const m = (JSON.parse(await cliOk(args)) as { results: Matrix }).results;
  return m[client] ?? {};
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(done: () => boolean, what = 'the lab to get there'): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

/**
 * Lets `pids` start no further process (or thread): a pids cgroup whose limit is what they have.
 * The v1 pids hierarchy when the machine has one (hybrid), else the agents' own cgroup v2.
 */
function noMoreProcesses(pids: readonly number[]): { lift(): void } {
  const v1 = '/sys/fs/cgroup/pids';
  const dir = existsSync(join(v1, 'cgroup.procs')) ? join(v1, `sy-${LAB}-limit`) : undefined;
  const groups = dir ? [dir] : [...new Set(pids.map((p) => join(cgroup2(), cgroupOf(p))))];
  const home = new Map(pids.map((p) => [p, v1Pids(p)]));
  if (dir) {
    mkdirSync(dir, { recursive: true });
    for (const pid of pids) writeFileSync(join(dir, 'cgroup.procs'), String(pid));
  }
  for (const g of groups) {
    if (!existsSync(join(g, 'pids.max'))) throw new Error(`no pids controller at ${g}`);
    writeFileSync(join(g, 'pids.max'), readFileSync(join(g, 'pids.current'), 'utf8').trim());
  }
  return {
    lift() {
      for (const g of groups) writeFileSync(join(g, 'pids.max'), 'max');
      if (!dir) return;
      for (const pid of pids) writeFileSync(join(v1, home.get(pid) ?? '/', 'cgroup.procs'), String(pid));
      // Once the limit is lifted an agent may start a child before it moves out: that child
      // was born here and must leave too, or the group cannot be removed.
      for (let tries = 0; ; tries++) {
        for (const pid of readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) {
          try {
            writeFileSync(join(v1, 'cgroup.procs'), pid);
          } catch {
            // It exited meanwhile.
          }
        }
        try {
          rmdirSync(dir);
          return;
        } catch (e) {
          if (tries >= 50 || (e as NodeJS.ErrnoException).code !== 'EBUSY') throw e;
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
        }
      }
    },
  };
}

/** nf_tables refuses every write of the lab's nftables agents until lifted (REFUSE_WRITES). */
function kernelRefuses(): { lift(): void } {
  writeFileSync(REFUSE_WRITES, '');
  return { lift: () => rmSync(REFUSE_WRITES, { force: true }) };
}

function v1Pids(pid: number): string {
  const line = readFileSync(`/proc/${pid}/cgroup`, 'utf8')
    .split('\n')
    .find((l) => l.split(':')[1] === 'pids');
  return line?.split(':')[2] ?? '/';
}

function cgroupOf(pid: number): string {
  const line = readFileSync(`/proc/${pid}/cgroup`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('0::'));
  return line?.slice(3) ?? '/';
}

describeKernel('lab: new endpoints are born closed', () => {
  const added: { name: string; ip: string }[] = [];

  beforeAll(async () => {
    await cli(['lab', 'down', '--name', LAB]);
  });

  afterAll(async () => {
    rmSync(REFUSE_WRITES, { force: true });
    await cli(['lab', 'down', '--name', LAB]);
  });

  availableBackends().forEach((backend, i) => {
    it(`${backend}: a pod added under default deny is never reachable from a denied client`, async () => {
      await cliOk(['lab', 'up', world(added), '--name', LAB, '--backend', backend]);
      const fresh = { name: `new-${backend}`, ip: `198.18.7.${20 + i}` };
      const prober = await startProber('cli/denied', [{ address: fresh.ip, port: PORT }]);
      // The new pod's node enforces late (its agent is paused): a pod routed before its policy is
      // in force would be open for that whole time, so the race is not left to the scheduler.
      // (A SIGSTOPped agent also slows its node's packets under a flood, so fresh connections from
      // `lab reach` are tried during the pause as well.)
      const agent = labAgents(LAB).find((a) => a.node === 'node-2');
      if (!agent) throw new Error('node-2 has no agent');
      process.kill(agent.pid, 'SIGSTOP');
      let code;
      let during: Record<string, boolean> = {};
      try {
        const child = startCli(['lab', 'apply', world([...added, fresh]), '--name', LAB]);
        const exited = new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
        await until(() => readState(LAB)?.topology?.pods.some((p) => p.id === `app/${fresh.name}`) === true);
        // Fresh connections too, from the lab's own prober, while the policy is late.
        during = await reachFrom('cli/denied');
        process.kill(agent.pid, 'SIGCONT');
        code = await exited;
      } finally {
        process.kill(agent.pid, 'SIGCONT');
      }
      await sleep(300);
      const report = await prober.stop();
      added.push(fresh);
      console.log(
        `${backend}: denied client → new pod: open ${openMs(report)} ms, ${report.hits.length} of ${report.attempts} connections`,
        report.failures,
        `; while its policy was late: ${during[`app/${fresh.name}`] ? 'reachable' : 'not reachable'}`,
      );
      expect(code).toBe(0);
      expect(report.attempts).toBeGreaterThan(50);
      expect(report.hits).toEqual([]);
      expect(during[`app/${fresh.name}`]).toBe(false);
      expect(readState(LAB)?.closed ?? []).toEqual([]);
      expect((await reachFrom('cli/allowed'))[`app/${fresh.name}`]).toBe(true);
      expect((await reachFrom('cli/denied'))[`app/${fresh.name}`]).toBe(false);
    });
  });

  it('lab apply SIGKILLed while applying: the next apply converges without a rebuild, the denied pair stays shut', async () => {
    const fresh = { name: 'new-kill', ip: '198.18.7.40' };
    const extraPolicy = networkPolicy('cli', 'allow-all-in-cli', { podSelector: {}, ingress: [{}] });
    const file = world([...added, fresh], [extraPolicy]);
    const targets = [OLD_IP, fresh.ip].map((address) => ({ address, port: PORT }));
    const prober = await startProber('cli/denied', targets);
    const child = startCli(['lab', 'apply', file, '--name', LAB]);
    const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
    await until(() => readState(LAB)?.status === 'applying', 'lab apply to reach its applying window');
    child.kill('SIGKILL');
    await exited;
    expect(readState(LAB)?.status).toBe('applying');
    const out = await cliOk(['lab', 'apply', file, '--name', LAB]);
    await sleep(300);
    const report = await prober.stop();
    added.push(fresh);
    console.log(
      `killed apply + recovery: denied pair open ${openMs(report)} ms, ${report.hits.length} of ${report.attempts}`,
    );
    expect(out).not.toMatch(/rebuilt/);
    expect(out).toMatch(/recovered an interrupted run in place/);
    expect(report.hits).toEqual([]);
    expect(readState(LAB)?.status).toBe('ready');
    const allowed = await reachFrom('cli/allowed');
    expect(allowed['app/old']).toBe(true);
    expect(allowed[`app/${fresh.name}`]).toBe(true);
  });

  it('a failed apply that adds a pod leaves it closed and the previous policy in force; the next apply opens it', async () => {
    // nftables: the kernel refuses the node's transaction (rule batch, members or nft -f alike).
    // iptables, which runs kernel tools for every write, fails when its agent may not start one
    // more process.
    const backend = availableBackends().includes('nftables') ? 'nftables' : 'iptables';
    await cliOk(['lab', 'up', world(added), '--name', LAB, '--backend', backend]);
    const fresh = { name: 'new-fail', ip: '198.18.7.50' };
    const prober = await startProber('cli/denied', [{ address: fresh.ip, port: PORT }]);
    const limit =
      backend === 'nftables' ? kernelRefuses() : noMoreProcesses(labAgents(LAB).map((a) => a.pid));
    let failed;
    let during: Record<string, boolean>;
    try {
      failed = await cli(['lab', 'apply', world([...added, fresh]), '--name', LAB]);
      // While the failure lasts (as a capacity error would), the pod must stay shut.
      during = await reachFrom('cli/denied');
    } finally {
      limit.lift();
    }
    await sleep(300);
    const report = await prober.stop();
    console.log(
      `failed apply: denied client → new pod: open ${openMs(report)} ms, ${report.hits.length} of ${report.attempts}`,
      report.failures,
      `; while the failure lasted: ${during['app/new-fail'] ? 'reachable' : 'not reachable'}`,
    );
    expect(report.hits).toEqual([]);
    expect(during['app/new-fail']).toBe(false);
    expect(failed.code).toBe(1);
    expect(failed.stderr).toMatch(/closed.*app\/new-fail/);
    expect(readState(LAB)?.closed).toEqual(['app/new-fail']);
    // The previous policy stays in force, and the closed pod is shut to everyone.
    const allowed = await reachFrom('cli/allowed');
    expect(allowed['app/old']).toBe(true);
    expect(allowed['app/new-fail']).toBe(false);
    expect((await reachFrom('cli/denied'))['app/old']).toBe(false);
    expect(await cliOk(['lab', 'status', '--name', LAB])).toMatch(/closed.*app\/new-fail/);

    await cliOk(['lab', 'apply', world([...added, fresh]), '--name', LAB]);
    expect(readState(LAB)?.closed ?? []).toEqual([]);
    expect((await reachFrom('cli/allowed'))['app/new-fail']).toBe(true);
    expect((await reachFrom('cli/denied'))['app/new-fail']).toBe(false);
  });
});
