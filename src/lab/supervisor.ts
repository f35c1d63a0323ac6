/**
 * A lab agent's supervisor: one small process per node that runs the agent and starts it again
 * when it exits without being asked to (SIGKILL, a crash, the OOM killer), backing off from
 * RESTART_MIN_MS to RESTART_MAX_MS while it keeps failing to start. An agent that got ready (it
 * says so in its state directory, agent/restarts.ts) and was then killed is always started again
 * after RESTART_MIN_MS: only exits before ready make a crash loop, so killing a healthy agent any
 * number of times never makes the supervisor give up. A restarted agent adopts the kernel as
 * it finds it and then repairs what changed while it was gone. Restarts are counted in the
 * agent's state directory (agent/restarts.ts), which the agent reports in `node status` and as
 * `switchyard_agent_restarts_total`.
 *
 * The supervisor is found again by its command line (SUPERVISOR_MARK and the agent's own flags),
 * so `lab down` stops it before the agent, also when whoever started it is gone.
 */
import { spawn } from 'node:child_process';
import { closeSync } from 'node:fs';
import { join } from 'node:path';
import { agentRequest } from '../agent/client.js';
import { agentFlags, cliEntry, launchAgent, type AgentLaunchSpec } from '../agent/launch.js';
import { apiSocket } from '../agent/paths.js';
import { readRestarts, wasReady, writeRestarts } from '../agent/restarts.js';
import type { BackendName } from '../dataplane/backend.js';
import type { PolicyMode } from '../ir/decision-table.js';
import { argValue } from '../netns/processes.js';
import { openPrivateLog, privateDir } from '../util/private-files.js';

/** The first argument after `supervise-agent` on a supervisor's command line. */
export const SUPERVISOR_MARK = '--switchyard-supervisor';

export const RESTART_MIN_MS = 100;
export const RESTART_MAX_MS = 10_000;
/**
 * An agent that ran this long before it exited starts again after RESTART_MIN_MS, also when it
 * never got ready (it was stuck, not crashing).
 */
const STABLE_MS = 30_000;
/**
 * Exits in a row, each before the agent got ready, after which the supervisor gives up (and exits,
 * so `lab up` reports the agent's error instead of waiting for its timeout).
 */
const MAX_QUICK_EXITS = 6;
/**
 * An agent that has not answered its API this long after its start (adopting or applying takes
 * seconds; program loads run off its main thread), or this long since its last answer, is hung:
 * it is killed, and so restarted like any other exit.
 */
const HUNG_AFTER_MS = Number(process.env.SWITCHYARD_AGENT_HUNG_MS ?? 60_000);
/** How often the supervisor asks a running agent's API whether it is alive. */
const LIVENESS_EVERY_MS = Math.min(5_000, HUNG_AFTER_MS / 4);

/** What a supervisor needs to start its agent again: the launch spec, always detached from it. */
export type SupervisedAgent = Omit<AgentLaunchSpec, 'outlive' | 'flows'>;

export function supervisorLog(stateDir: string): string {
  return join(stateDir, 'supervisor.log');
}

function supervisorArgs(a: SupervisedAgent): string[] {
  return [
    cliEntry(),
    'supervise-agent',
    SUPERVISOR_MARK,
    ...agentFlags(a),
    ...(a.cgroup ? ['--cgroup', a.cgroup] : []),
  ];
}

/** The agent a supervisor runs, read back from its command line. */
export function supervisedFromArgv(argv: readonly string[]): SupervisedAgent {
  const optional = (flag: string): string | undefined => argValue(argv, flag) || undefined;
  const policyMode = optional('--policy-mode') as PolicyMode | undefined;
  const cgroupsFile = optional('--cgroups');
  const cgroup = optional('--cgroup');
  const metrics = optional('--metrics');
  const ca = optional('--etcd-cacert');
  const cert = optional('--etcd-cert');
  const key = optional('--etcd-key');
  return {
    node: argValue(argv, '--node'),
    netns: argValue(argv, '--netns'),
    backend: argValue(argv, '--backend') as BackendName,
    scope: argValue(argv, '--scope'),
    source: argValue(argv, '--source'),
    stateDir: argValue(argv, '--state-dir'),
    ...(policyMode ? { policyMode } : {}),
    ...(cgroupsFile ? { cgroupsFile } : {}),
    ...(ca && cert && key ? { etcdTls: { ca, cert, key } } : {}),
    ...(cgroup ? { cgroup } : {}),
    ...(metrics ? { metrics } : {}),
  };
}

/** Starts a detached supervisor for one node's agent; returns its pid. */
export function launchSupervisor(a: SupervisedAgent): number {
  privateDir(a.stateDir);
  // A new supervision starts counting from zero.
  writeRestarts(a.stateDir, { restarts: 0 });
  const log = openPrivateLog(supervisorLog(a.stateDir));
  try {
    const child = spawn(process.execPath, supervisorArgs(a), {
      detached: true,
      stdio: ['ignore', log, log],
    });
    if (child.pid === undefined) throw new Error(`cannot start the supervisor of node ${a.node}'s agent`);
    child.unref();
    return child.pid;
  } finally {
    closeSync(log);
  }
}

function say(message: string, fields: Record<string, unknown> = {}): void {
  process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), msg: message, ...fields })}\n`);
}

/**
 * Runs the agent until SIGTERM or SIGINT (then stops the agent with the same signal and returns
 * 0), restarting it whenever it exits on its own. Returns 1 when it gave up.
 */
export async function superviseAgent(a: SupervisedAgent): Promise<number> {
  let stopping: NodeJS.Signals | undefined;
  let current: ReturnType<typeof launchAgent> | undefined;
  let wake: (() => void) | undefined;
  const stop = (signal: NodeJS.Signals): void => {
    stopping = signal;
    if (current && current.exitCode() === undefined) process.kill(current.pid, signal);
    wake?.();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));

  const spec: AgentLaunchSpec = { ...a, outlive: false };
  let backoff = RESTART_MIN_MS;
  let quickExits = 0;
  for (;;) {
    const started = Date.now();
    current = launchAgent(spec);
    say('agent started', { pid: current.pid });
    const watchdog = watchLiveness(a.stateDir, current.pid);
    const code = await current.exited;
    clearInterval(watchdog);
    if (stopping) {
      say('agent stopped', { signal: stopping, code });
      return 0;
    }
    const ran = Date.now() - started;
    const ready = wasReady(a.stateDir, current.pid);
    if (ready || ran >= STABLE_MS) {
      backoff = RESTART_MIN_MS;
      quickExits = 0;
    } else quickExits++;
    if (quickExits >= MAX_QUICK_EXITS) {
      say('agent keeps exiting: giving up', { code, exits: quickExits });
      return 1;
    }
    const restarts = (readRestarts(a.stateDir)?.restarts ?? 0) + 1;
    writeRestarts(a.stateDir, { restarts, lastExit: { at: new Date().toISOString(), code } });
    say('agent exited: restarting', { code, ranMs: ran, ready, restarts, inMs: backoff });
    await new Promise<void>((resolve) => {
      wake = resolve;
      setTimeout(resolve, backoff);
    });
    wake = undefined;
    if (stopping) return 0;
    backoff = Math.min(RESTART_MAX_MS, backoff * 2);
  }
}

/**
 * Kills the agent `pid` once its API has been silent for HUNG_AFTER_MS (counted from its start
 * until it first answers): a hung agent repairs nothing, so it is restarted like a dead one.
 */
function watchLiveness(stateDir: string, pid: number): NodeJS.Timeout {
  let lastAnswer = Date.now();
  let asking = false;
  return setInterval(() => {
    if (asking) return;
    asking = true;
    agentRequest(apiSocket(stateDir), '/v1/status', { timeoutMs: LIVENESS_EVERY_MS })
      .then(() => {
        lastAnswer = Date.now();
      })
      .catch(() => {
        if (Date.now() - lastAnswer < HUNG_AFTER_MS) return;
        say('agent does not answer: killing it', { pid, silentMs: Date.now() - lastAnswer });
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // Already gone: its exit is handled by the loop.
        }
      })
      .finally(() => {
        asking = false;
      });
  }, LIVENESS_EVERY_MS);
}
