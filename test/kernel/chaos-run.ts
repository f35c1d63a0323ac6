/**
 * One chaos run on one backend: a lab with agents, probers in every client pod, and a seeded
 * driver that adds pods under default deny, applies policy changes, SIGKILLs `lab apply` and
 * agents, and tampers with the kernel. Returns what happened; the test judges it.
 */
import type { BackendName, NodeTarget } from '../../src/dataplane/backend.js';
import { readdirSync, readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { agentRequest } from '../../src/agent/client.js';
import { agentLog, apiSocket } from '../../src/agent/paths.js';
import { agentStateDir, labAgents } from '../../src/lab/agents.js';
import { readState, type LabState } from '../../src/lab/state.js';
import type { Endpoint } from '../../src/ir/types.js';
import { cli, cliOk, manifestFile, startCli } from './lab-harness.js';
import {
  judge,
  type AppliedRevision,
  type ModelOptions,
  type ProbeRecord,
  type TamperWindow,
  type Verdicts,
} from '../support/chaos-model.js';
import { Probers, type ProberStats } from './chaos-probers.js';
import { TAMPERS, type Tamper } from './chaos-tamper.js';
import {
  allowedPairs,
  CLIENT_NS,
  CLIENTS,
  manifests,
  pairKey,
  randomAllow,
  seededRandom,
  SERVER_NS,
  type Revision,
} from './chaos-world.js';

export interface ChaosLimits {
  /** How long the driver runs (the lab's up and down come on top). */
  durationMs: number;
  /** After an apply succeeded, how long before allowed pairs must connect. */
  settleMs: number;
  /** Every tamper must be gone from the kernel within this. */
  repairLimitMs: number;
  /** How long to watch a tamper before giving up on the agent and taking it back. */
  repairWaitMs: number;
  /** A SIGKILLed agent must be running again within this. */
  restartLimitMs: number;
  maxServers: number;
  /**
   * Least time between two SIGKILLs of one node's agent: long enough for the restarted agent to
   * get ready (a supervisor rightly gives up on an agent that keeps dying before it is ready, a
   * crash loop; killed once ready, it is always restarted).
   */
  agentKillSpacingMs: number;
}

/**
 * Cluster mode: `cluster up --etcd-members N`, writes with `apply --lab` (etcd, then the lab
 * converges and waits for every agent), and the etcd Raft leader SIGKILLed under writes.
 */
export interface ClusterChaos {
  etcdMembers: number;
}

export interface TamperResult {
  kind: string;
  what: string;
  node: string;
  /** From the tamper command's return to the kernel read that found it gone; undefined: never. */
  repairMs?: number;
  /** The denied pair the tamper opens. */
  openedPair: string;
  /** Connections on it that went through while the tamper was in the kernel (before repair). */
  openedConnections: number;
}

export interface ChaosResult {
  backend: BackendName;
  seed: number;
  /** Epoch ms the run began: the zero of the log's and the failures' relative times. */
  startedAt: number;
  durationMs: number;
  verdicts: Verdicts;
  connections: number;
  applies: { ok: number; killed: number; failed: string[] };
  pods: number;
  tampers: TamperResult[];
  agentKills: { node: string; restartMs?: number }[];
  /** Cluster mode: etcd leaders SIGKILLed, each followed by a write. */
  etcdLeaderKills: number;
  proberStats: ProberStats[];
  proberRestarts: number;
  /** Every revision applied, in order (the model's input, for a failure's message). */
  revisions: AppliedRevision[];
  /** Every probed connection (for a failure's message: earlier uses of the same 5-tuple). */
  records: ProbeRecord[];
  /** What happened when, for a failure's message (relative ms). */
  log: string[];
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitFor(
  cond: () => Promise<boolean> | boolean,
  limitMs: number,
  everyMs = 10,
): Promise<number | undefined> {
  const start = Date.now();
  for (;;) {
    if (await cond()) return Date.now() - start;
    if (Date.now() - start > limitMs) return undefined;
    await sleep(everyMs);
  }
}

export class ChaosRun {
  private readonly rand: () => number;
  private readonly revisions: AppliedRevision[] = [];
  private readonly windows: TamperWindow[] = [];
  private readonly result: ChaosResult;
  private current: Revision = { servers: ['s0', 's1'], allow: {} };
  private probers: Probers | undefined;
  private watcher: NodeJS.Timeout | undefined;
  private targetsKey = '';
  private t0 = Date.now();
  private tamperTurn = 0;
  private readonly lastAgentKill = new Map<string, number>();
  /** The window of each entry of result.tampers, same order. */
  private readonly tamperWindows: TamperWindow[] = [];

  constructor(
    private readonly lab: string,
    private readonly backend: BackendName,
    private readonly seed: number,
    private readonly limits: ChaosLimits,
    private readonly cluster?: ClusterChaos,
  ) {
    this.rand = seededRandom(seed);
    this.result = {
      backend,
      seed,
      startedAt: Date.now(),
      durationMs: 0,
      verdicts: { mustFail: 0, mustSucceed: 0, falsePasses: [], falseDrops: [], unjudged: 0 },
      connections: 0,
      applies: { ok: 0, killed: 0, failed: [] },
      pods: 0,
      tampers: [],
      agentKills: [],
      etcdLeaderKills: 0,
      revisions: [],
      records: [],
      proberStats: [],
      proberRestarts: 0,
      log: [],
    };
  }

  private note(msg: string): void {
    this.result.log.push(`+${String(Date.now() - this.t0).padStart(6)} ms  ${msg}`);
  }

  private state(): LabState {
    const s = readState(this.lab);
    if (!s?.topology) throw new Error(`lab ${this.lab} has no topology`);
    return s;
  }

  async run(): Promise<ChaosResult> {
    this.t0 = Date.now();
    this.result.startedAt = this.t0;
    this.current.allow = randomAllow(this.current.servers, this.rand);
    const file = manifestFile(manifests(this.current));
    await cliOk(
      this.cluster
        ? [
            'cluster',
            'up',
            file,
            '--name',
            this.lab,
            '--backend',
            this.backend,
            '--etcd-members',
            String(this.cluster.etcdMembers),
          ]
        : ['lab', 'up', file, '--name', this.lab, '--backend', this.backend],
    );
    this.revisions.push({ rev: 0, allowed: allowedPairs(this.current), start: -Infinity, end: Date.now() });
    this.note(`lab up: ${JSON.stringify(this.current.allow)}`);
    const pods = this.state().topology?.pods ?? [];
    const clients = new Map(
      CLIENTS.map((c) => [c, pods.find((p) => p.id === `${CLIENT_NS}/${c}`)?.netns as string]),
    );
    this.probers = new Probers(clients);
    this.probers.start();
    this.watchTargets();
    try {
      const started = Date.now();
      await sleep(1500); // probers up and a first settled period
      while (Date.now() - started < this.limits.durationMs) await this.step();
      await sleep(this.limits.settleMs + 500);
    } finally {
      clearInterval(this.watcher);
      await this.probers.stop();
    }
    const r = this.result;
    r.durationMs = Date.now() - this.t0;
    r.connections = this.probers.records.length;
    r.proberStats = this.probers.stats;
    r.proberRestarts = this.probers.restarts;
    r.pods = this.current.servers.length + CLIENTS.length;
    const opts: ModelOptions = { settleMs: this.limits.settleMs, slackMs: 20 };
    r.revisions = this.revisions;
    r.records = this.probers.records;
    r.verdicts = judge(this.probers.records, this.revisions, this.windows, opts);
    r.tampers.forEach((t, i) => {
      const w = this.tamperWindows[i] as TamperWindow;
      t.openedConnections =
        this.probers?.records.filter((p) => p.pair === t.openedPair && p.ok && p.t >= w.start && p.t <= w.end)
          .length ?? 0;
    });
    return r;
  }

  /** Keeps the probers' targets equal to the servers the lab has or is creating. */
  private watchTargets(): void {
    const sync = (): void => {
      let s: LabState | undefined;
      try {
        s = readState(this.lab);
      } catch {
        return; // being rewritten
      }
      const byId = new Map<string, string>();
      for (const p of [...(s?.topology?.pods ?? []), ...(s?.target?.pods ?? [])])
        if (p.namespace === SERVER_NS) byId.set(p.id, p.address);
      const targets = [...byId]
        .map(([id, address]) => ({ id, address }))
        .sort((a, b) => (a.id < b.id ? -1 : 1));
      const key = JSON.stringify(targets);
      if (key !== this.targetsKey) {
        this.targetsKey = key;
        this.probers?.setTargets(targets);
        this.note(`probing ${targets.map((t) => t.id).join(', ')}`);
      }
      void this.probers?.checkNamespaces();
    };
    sync();
    this.watcher = setInterval(sync, 10);
  }

  private async step(): Promise<void> {
    const x = this.rand();
    if (this.cluster && x < 0.15) await this.killEtcdLeader();
    else if (x < 0.3) await this.applyChange(false);
    else if (x < 0.45) await this.applyChange(true);
    else if (x < 0.6) await this.killAgent();
    else await this.tamper();
    await sleep(300 + Math.floor(this.rand() * 700));
  }

  private nextRevision(): Revision {
    const servers = [...this.current.servers];
    if (servers.length < this.limits.maxServers && this.rand() < 0.5) servers.push(`s${servers.length}`);
    return { servers, allow: randomAllow(servers, this.rand) };
  }

  /** `lab apply` of a new revision; `kill`: SIGKILLed part-way, then a normal apply follows. */
  private async applyChange(kill: boolean): Promise<void> {
    const next = this.nextRevision();
    await this.apply(next, kill ? 50 + Math.floor(this.rand() * 1500) : undefined);
    if (kill) await this.apply(this.nextRevision());
  }

  private async apply(next: Revision, killAfterMs?: number): Promise<void> {
    const file = manifestFile(manifests(next));
    const entry: AppliedRevision = {
      rev: this.revisions.length,
      allowed: allowedPairs(next),
      start: Date.now(),
    };
    this.revisions.push(entry);
    const added = next.servers.filter((s) => !this.current.servers.includes(s));
    this.current = next;
    const what = `rev ${entry.rev}${added.length ? ` adds ${added.join(',')}` : ''}: ${JSON.stringify(next.allow)}`;
    const child = startCli(
      this.cluster
        ? ['apply', file, '--lab', this.lab, '--prune']
        : ['lab', 'apply', file, '--name', this.lab],
    );
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const killer =
      killAfterMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), killAfterMs);
    const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
    clearTimeout(killer);
    if (code === 0) {
      entry.end = Date.now();
      this.result.applies.ok += 1;
      this.note(`apply ${what} in force after ${entry.end - entry.start} ms`);
      await sleep(this.limits.settleMs);
    } else if (killAfterMs !== undefined && code === null) {
      this.result.applies.killed += 1;
      this.note(`apply ${what} SIGKILLed after ${killAfterMs} ms`);
    } else {
      this.result.applies.failed.push(`rev ${entry.rev}: exit ${code}: ${stderr.trim().slice(0, 400)}`);
      this.note(`apply ${what} FAILED: ${stderr.trim().slice(0, 200)}`);
    }
  }

  /** SIGKILLs the etcd leader, writes a new revision while the members elect another, restarts it. */
  private async killEtcdLeader(): Promise<void> {
    const out = await cliOk(['cluster', 'etcd', 'kill', '--leader', '--name', this.lab]);
    this.result.etcdLeaderKills += 1;
    this.note(`etcd leader killed: ${out.trim()}`);
    await this.apply(this.nextRevision());
    this.note(`etcd: ${(await cliOk(['cluster', 'etcd', 'start', '--name', this.lab])).trim()}`);
  }

  private pickNode(): string {
    const nodes = this.state().topology?.nodes ?? [];
    return nodes[Math.floor(this.rand() * nodes.length)]?.name as string;
  }

  private agentPid(node: string): number | undefined {
    return labAgents(this.lab).find((a) => a.node === node)?.pid;
  }

  private async killAgent(): Promise<void> {
    const node = this.pickNode();
    if (Date.now() - (this.lastAgentKill.get(node) ?? -Infinity) < this.limits.agentKillSpacingMs) return;
    this.lastAgentKill.set(node, Date.now());
    const pid = this.agentPid(node);
    if (pid === undefined) {
      this.note(`no agent on ${node} to kill`);
      return;
    }
    process.kill(pid, 'SIGKILL');
    const restartMs = await waitFor(() => {
      const now = this.agentPid(node);
      return now !== undefined && now !== pid;
    }, this.limits.restartLimitMs + 1000);
    this.result.agentKills.push({ node, ...(restartMs !== undefined ? { restartMs } : {}) });
    this.note(
      `SIGKILL agent ${node} (pid ${pid}): ${restartMs === undefined ? 'NOT restarted' : `restarted after ${restartMs} ms`}`,
    );
    // Nothing restarted it: the next `lab apply` does (this run goes on with a live agent).
    if (restartMs === undefined) await this.apply(this.current);
  }

  private async tamper(): Promise<void> {
    const state = this.state();
    const pods = state.topology?.pods ?? [];
    const address = (id: string): string => pods.find((p) => p.id === id)?.address as string;
    const allowed = this.revisions.at(-1)?.allowed ?? new Set<string>();
    const candidates = this.current.servers.flatMap((s) => {
      const a = CLIENTS.filter((c) => allowed.has(pairKey(c, s)));
      const d = CLIENTS.filter((c) => !allowed.has(pairKey(c, s)));
      return a.length > 0 && d.length > 0 ? [{ s, a: a[0] as string, d: d[0] as string }] : [];
    });
    const pick = candidates[Math.floor(this.rand() * candidates.length)];
    if (!pick) return;
    const serverPod = pods.find((p) => p.id === `${SERVER_NS}/${pick.s}`);
    const server = state.ir.endpoints.find((e) => e.id === `${SERVER_NS}/${pick.s}`);
    const node = state.topology?.nodes.find((n) => n.name === serverPod?.node);
    if (!serverPod || !server || !node) return;
    const fns = TAMPERS[this.backend];
    const fn = fns[this.tamperTurn++ % fns.length];
    if (!fn) return;
    const target: NodeTarget = { scope: this.lab, node: node.name, netns: node.netns };
    const start = Date.now();
    const tamper = await fn({
      node: target,
      server: server as Endpoint,
      allowed: address(`${CLIENT_NS}/${pick.a}`),
      denied: address(`${CLIENT_NS}/${pick.d}`),
    });
    if (!tamper) {
      this.note(`tamper on ${node.name}: nothing to tamper with`);
      return;
    }
    const done = Date.now();
    const repairMs = await waitFor(async () => !(await tamper.present()), this.limits.repairWaitMs);
    const measured = repairMs === undefined ? undefined : Date.now() - done;
    this.note(
      `tamper ${tamper.what}: ${measured === undefined ? 'NOT repaired' : `repaired after ${measured} ms`}`,
    );
    if (measured === undefined) await this.takeBack(tamper, node.name);
    const servers = new Set(
      pods.filter((p) => p.node === node.name && p.namespace === SERVER_NS).map((p) => p.id),
    );
    const window = { servers, start, end: Date.now() + 100 };
    this.windows.push(window);
    this.tamperWindows.push(window);
    this.result.tampers.push({
      kind: tamper.kind,
      what: tamper.what,
      node: node.name,
      ...(measured !== undefined ? { repairMs: measured } : {}),
      openedPair: pairKey(pick.d, pick.s),
      openedConnections: 0,
    });
  }

  /** Nothing repaired the tamper: undo it, or restart the node's agent (a new agent does a full apply). */
  private async takeBack(tamper: Tamper, node: string): Promise<void> {
    this.note(
      `agent of ${node} did not repair: ${await agentDiagnosis(this.lab, node, this.agentPid(node))}`,
    );
    if (tamper.undo) await tamper.undo();
    else {
      const pid = this.agentPid(node);
      if (pid !== undefined) process.kill(pid, 'SIGKILL');
      await this.apply(this.current);
    }
    if ((await waitFor(async () => !(await tamper.present()), 5000)) === undefined)
      throw new Error(`could not take back the tamper '${tamper.what}' on ${node}`);
  }
}

/** Removes the lab (and in cluster mode its etcd) whatever state the run left it in. */
export async function removeLab(lab: string): Promise<void> {
  await cli(['lab', 'down', '--name', lab]);
}

/**
 * What an agent that did not repair was doing: whether its API answers, each thread's kernel wait,
 * its child processes and the last lines of its log (an unexplained, rare hang of a restarted
 * nftables agent is being hunted with this).
 */
async function agentDiagnosis(lab: string, node: string, pid: number | undefined): Promise<string> {
  if (pid === undefined) return 'no agent process';
  const read = (path: string): string => {
    try {
      return readFileSync(path, 'utf8').trim();
    } catch {
      return '?';
    }
  };
  const stateDir = agentStateDir(lab, node);
  const status = await Promise.race([
    agentRequest<{ revision?: string; lastApply?: unknown; lastError?: unknown }>(
      apiSocket(stateDir),
      '/v1/status',
    )
      .then(
        (s) =>
          `API answers: revision ${s.revision ?? '-'}, lastApply ${JSON.stringify(s.lastApply)}, lastError ${JSON.stringify(s.lastError)}`,
      )
      .catch((e: unknown) => `API error: ${String(e)}`),
    new Promise<string>((r) => setTimeout(() => r('API silent for 2 s'), 2000)),
  ]);
  let threads: string[] = [];
  try {
    threads = readdirSync(`/proc/${pid}/task`).map(
      (t) =>
        `${read(`/proc/${pid}/task/${t}/comm`)}:${read(`/proc/${pid}/task/${t}/wchan`)}:${read(`/proc/${pid}/task/${t}/syscall`).split(' ')[0]}`,
    );
  } catch {
    threads = ['(gone)'];
  }
  const children = spawnSync('ps', ['--ppid', String(pid), '-o', 'pid=,etimes=,args='], { encoding: 'utf8' })
    .stdout.trim()
    .split('\n')
    .filter(Boolean);
  const log = read(agentLog(stateDir)).split('\n').slice(-6);
  return [
    status,
    `threads ${threads.join(' ')}`,
    `children: ${children.join(' | ') || 'none'}`,
    ...log.map((l) => `log: ${l}`),
  ].join('\n      ');
}
