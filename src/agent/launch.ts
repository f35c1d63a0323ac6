/**
 * Starting `switchyard agent` as a process of its own, and waiting until it says what the caller
 * waits for: the lab starts one per node (and leaves them running), the benches start them to
 * measure a real agent. The agent is found again by its command line (AGENT_MARK, --scope), so
 * `lab down` stops it even when whoever started it is gone.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BackendName } from '../dataplane/backend.js';
import type { EtcdTlsFiles } from '../datastore/etcd.js';
import type { PolicyMode } from '../ir/decision-table.js';
import type { AgentStatus } from './agent.js';
import { agentRequest } from './client.js';
import { AGENT_MARK, agentLog, apiSocket } from './paths.js';
import { openPrivateLog, privateDir } from '../util/private-files.js';

export interface AgentLaunchSpec {
  node: string;
  netns: string;
  backend: BackendName;
  /** Scope of the kernel objects the agent owns (a lab's name). */
  scope: string;
  /** Where the desired state comes from: a directory, or an etcd URL. */
  source: string;
  stateDir: string;
  /** For sources the agent compiles (etcd); default the agent's. */
  policyMode?: PolicyMode;
  /** Flow records (default on); off runs the agent with `--no-flows`. */
  flows?: boolean;
  /** Process context on flows (default on); off runs the agent with `--no-process-tracing`. */
  processTracing?: boolean;
  /** Pod → cgroup file, for the process context of an etcd-fed agent (`--cgroups`). */
  cgroupsFile?: string;
  /** The client certificate an etcd-fed agent authenticates with (`--etcd-cacert/-cert/-key`). */
  etcdTls?: EtcdTlsFiles;
  /** Serve Prometheus metrics on this loopback address (`--metrics`; port 0: any free port). */
  metrics?: string;
  /**
   * A cgroup (created if missing) the agent runs in from its first instruction: every socket it
   * opens is made there (a cgroup's socket programs see only the sockets created in it).
   */
  cgroup?: string;
  /**
   * Keep running when this process exits (the lab's agents: `lab up` returns, they stay).
   * Otherwise the agent is in this process's group and a Ctrl-C stops it too.
   */
  outlive?: boolean;
}

/** What the launcher and the waiter need of a running agent. */
export interface AgentWatch {
  pid: number;
  /** The agent's API. */
  socket: string;
  /** For messages: "the agent of node node-1". */
  what: string;
  log: string;
  /** undefined while the agent runs; once it has exited, its exit code (null: unknown). */
  exitCode(): number | null | undefined;
}

export interface LaunchedAgent extends AgentWatch {
  spec: AgentLaunchSpec;
  /** Date.now() right before the spawn. */
  spawnedAt: number;
  /** Resolves with the exit code (-1 for a signal or a failed spawn) once the agent exits. */
  exited: Promise<number>;
}

/** The agent exited, or did not come up or get where it was waited for in time. */
export class AgentLaunchError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'AgentLaunchError';
  }
}

/** The CLI launcher (src/agent and dist/agent both sit two levels below it). */
export function cliEntry(): string {
  const path = fileURLToPath(new URL('../../bin/switchyard', import.meta.url));
  if (!existsSync(path)) throw new AgentLaunchError(`switchyard's launcher not found at ${path}`);
  return path;
}

/** The flags that say which agent it is: also on its supervisor's command line (src/lab/supervisor.ts). */
export function agentFlags(
  spec: Pick<
    AgentLaunchSpec,
    | 'node'
    | 'backend'
    | 'netns'
    | 'scope'
    | 'source'
    | 'stateDir'
    | 'cgroupsFile'
    | 'etcdTls'
    | 'policyMode'
    | 'metrics'
  >,
): string[] {
  return [
    ...['--node', spec.node, '--backend', spec.backend, '--netns', spec.netns, '--scope', spec.scope],
    ...['--source', spec.source, '--state-dir', spec.stateDir],
    ...(spec.cgroupsFile ? ['--cgroups', spec.cgroupsFile] : []),
    ...(spec.etcdTls
      ? ['--etcd-cacert', spec.etcdTls.ca, '--etcd-cert', spec.etcdTls.cert, '--etcd-key', spec.etcdTls.key]
      : []),
    ...(spec.policyMode ? ['--policy-mode', spec.policyMode] : []),
    ...(spec.metrics ? ['--metrics', spec.metrics] : []),
  ];
}

/**
 * V8 flags of agent processes. A smaller young generation (semi-spaces of 2 MiB, not 16): the
 * agent allocates in bursts (a sync, a change) and V8 keeps the young generation it grew to for
 * good. Measured on the 10k-endpoint agent bench model: RSS after 100 changes 253 MiB with 16 MiB
 * semi-spaces, 151 MiB with 4 (14% more CPU); later, with the agent compacting when it goes quiet,
 * 141 → 135 MiB from 4 to 2 MiB (133 with 1 MiB, whose extra scavenges cost the 50k full sync
 * ~0.5 s of its 10 s target) at the same change latency (docs/agent.md, "Memory budget").
 * `--expose-gc`: the agent compacts its heap once it goes quiet (agent/memory.ts).
 */
export const AGENT_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=2', '--expose-gc'];

/**
 * The environment of agent processes: glibc keeps at most two malloc arenas (unless the caller
 * set `MALLOC_ARENA_MAX` itself). By default each of V8's and libuv's threads that allocates gets
 * an arena of its own (up to 8 per core) and keeps what it once held: at 10k endpoints four thread
 * arenas held 15.6 MiB of RSS after the agent went quiet and trimmed them, and glibc's share of
 * RSS was ~3 MiB smaller with two (docs/agent.md, "Memory budget"). The agent's JavaScript runs
 * on one thread, so the arenas see little contention.
 */
export function agentEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  return { ...env, MALLOC_ARENA_MAX: env.MALLOC_ARENA_MAX ?? '2' };
}

function agentArgs(spec: AgentLaunchSpec): string[] {
  return [
    ...AGENT_NODE_FLAGS,
    cliEntry(),
    'agent',
    AGENT_MARK,
    ...agentFlags(spec),
    ...(spec.flows === false ? ['--no-flows'] : []),
    ...(spec.processTracing === false ? ['--no-process-tracing'] : []),
  ];
}

function spawnAgent(spec: AgentLaunchSpec, log: number): ChildProcess {
  const options = {
    detached: spec.outlive === true,
    stdio: ['ignore', log, log] as ['ignore', number, number],
    env: agentEnv(),
  };
  if (!spec.cgroup) return spawn(process.execPath, agentArgs(spec), options);
  mkdirSync(spec.cgroup, { recursive: true });
  // The shell joins the cgroup and then becomes the agent (same pid).
  return spawn(
    '/bin/sh',
    [
      '-c',
      'echo $$ > "$0" && exec "$@"',
      join(spec.cgroup, 'cgroup.procs'),
      process.execPath,
      ...agentArgs(spec),
    ],
    options,
  );
}

/** Starts `switchyard agent` for one node, logging into its state directory. */
export function launchAgent(spec: AgentLaunchSpec): LaunchedAgent {
  privateDir(spec.stateDir);
  const logFile = agentLog(spec.stateDir);
  const log = openPrivateLog(logFile);
  const spawnedAt = Date.now();
  let child: ChildProcess;
  try {
    child = spawnAgent(spec, log);
  } finally {
    closeSync(log);
  }
  // Listening before anything can throw: a failed spawn reports 'error' later, and unheard it would crash.
  let code: number | undefined;
  const exited = new Promise<number>((resolve) => {
    child.on('error', () => resolve((code = -1)));
    child.on('exit', (c) => resolve((code = c ?? -1)));
  });
  if (child.pid === undefined) throw new AgentLaunchError(`cannot start the agent of node ${spec.node}`);
  if (spec.outlive) child.unref();
  return {
    spec,
    pid: child.pid,
    socket: apiSocket(spec.stateDir),
    what: `the ${spec.backend} agent of ${spec.node}`,
    log: logFile,
    exitCode: () => code,
    spawnedAt,
    exited,
  };
}

/** The last `lines` lines of an agent's log ('' when there is none). */
export function agentLogTail(agent: Pick<AgentWatch, 'log'>, lines = 8): string {
  try {
    return readFileSync(agent.log, 'utf8').trim().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

export interface AgentWait {
  /**
   * True once the status is what the caller waits for; throws to give up (an error the agent
   * reports for the revision waited for).
   */
  until(status: AgentStatus): boolean;
  /** What is waited for, for the timeout's message: "sync", "put revision 7 in force". */
  goal: string;
  timeoutMs: number;
  /** Extra time while the API has not answered yet (it opens after the first sync). */
  startTimeoutMs?: number;
  pollMs?: number;
}

const withTail = (agent: AgentWatch): string => {
  const tail = agentLogTail(agent);
  return tail ? `:\n${tail}` : '';
};

/**
 * Polls the agent's status until `wait.until` holds; throws AgentLaunchError with the log's tail
 * when the agent exits or the time runs out.
 */
export async function waitForAgent(agent: AgentWatch, wait: AgentWait): Promise<AgentStatus> {
  const started = Date.now();
  let answered = false;
  for (;;) {
    const code = agent.exitCode();
    if (code !== undefined)
      throw new AgentLaunchError(
        `${agent.what} exited${code === null ? '' : ` (${code})`}${withTail(agent)}`,
      );
    let status: AgentStatus | undefined;
    try {
      status = await agentRequest<AgentStatus>(agent.socket, '/v1/status', { timeoutMs: 10_000 });
    } catch {
      // not listening yet: the API opens after the first sync
    }
    if (status) {
      answered = true;
      if (wait.until(status)) return status;
    }
    const limit = wait.timeoutMs + (answered ? 0 : (wait.startTimeoutMs ?? 0));
    if (Date.now() - started > limit)
      throw new AgentLaunchError(
        `${agent.what} did not ${wait.goal} within ${limit / 1000} s${withTail(agent)}`,
      );
    await new Promise((r) => setTimeout(r, wait.pollMs ?? 20));
  }
}
