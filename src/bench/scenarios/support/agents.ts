/**
 * Real `switchyard agent` processes for the benches that measure one (agent, observe): started
 * with the one launcher the lab uses, waited for, measured through /proc, stopped.
 */
import type { PolicyMode } from '../../../ir/decision-table.js';
import { readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { AgentStatus } from '../../../agent/agent.js';
import { agentRequest } from '../../../agent/client.js';
import { AgentLaunchError, launchAgent, waitForAgent, type LaunchedAgent } from '../../../agent/launch.js';
import type { BackendName } from '../../../dataplane/backend.js';
import { loadBackend } from '../../../dataplane/registry.js';
import { stopProcesses } from '../../../lab/detached.js';

export interface BenchAgentSpec {
  lab: string;
  node: string;
  netns: string;
  backend: BackendName;
  /** Source directory the agent watches. */
  source: string;
  stateDir: string;
  flows: boolean;
  /** Process context on flows (default on). */
  processTracing?: boolean;
  /** Default the agent's own. */
  policyMode?: PolicyMode;
}

/**
 * Starts an agent with the lab's scope (so `lab down` stops it if this process dies first), in
 * this process's group (a Ctrl-C of the bench stops it too).
 */
export function startAgent(spec: BenchAgentSpec): LaunchedAgent {
  const { lab, ...rest } = spec;
  return launchAgent({ ...rest, scope: lab });
}

/**
 * Polls the agent's API until `done(status)` holds; throws with the log's tail when the agent
 * exits, reports an error for the desired revision, or the time runs out.
 */
export function waitForSync(
  h: LaunchedAgent,
  done: (s: AgentStatus) => boolean,
  timeoutMs: number,
  pollMs = 20,
): Promise<AgentStatus> {
  const until = (s: AgentStatus): boolean => {
    if (done(s)) return true;
    if (s.lastError && s.lastError.revision !== undefined && s.lastError.revision === s.desiredRevision)
      throw new AgentLaunchError(`${h.what} failed: ${s.lastError.message}`);
    return false;
  };
  return waitForAgent(h, { until, goal: 'sync', timeoutMs, pollMs });
}

/** SIGTERM (the dataplane stays), SIGKILL after 5 s. */
export async function stopAgent(h: LaunchedAgent): Promise<void> {
  if (h.exitCode() !== undefined) return;
  await stopProcesses([h.pid], 'SIGTERM');
  await h.exited;
}

/** Flow sources the agent reported running (from its log), if it logged them. */
export function agentFlowSources(h: LaunchedAgent): string[] | undefined {
  try {
    const text = readFileSync(h.log, 'utf8');
    for (const line of text.trim().split('\n').reverse()) {
      if (!line.includes('flow sources running')) continue;
      const parsed = JSON.parse(line) as { sources?: string[] };
      return parsed.sources ?? [];
    }
  } catch {
    // not JSON (a terminal's pretty log) or no log
  }
  return undefined;
}

/** Resident and peak memory of a process in MiB. */
export function memoryMiB(pid: number): { rss: number; hwm: number } {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string): number => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(text)?.[1] ?? NaN);
  return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024 };
}

/** What V8 reports of an agent's heap (MiB), from the agent's own metrics (prom-client's defaults). */
export interface AgentHeap {
  /** Live objects and garbage not collected yet. */
  used: number;
  /** What the heap holds from the system (its spaces), used or not. */
  total: number;
  /** Memory of objects outside the heap (buffers). */
  external: number;
}

export async function agentHeapMiB(h: LaunchedAgent): Promise<AgentHeap | undefined> {
  try {
    const text = await agentRequest<string>(h.socket, '/metrics');
    const value = (name: string): number =>
      Number(
        new RegExp(`^switchyard_agent_${name}(?:\\{[^}]*\\})? ([0-9.e+]+)$`, 'm').exec(text)?.[1] ?? NaN,
      ) /
      2 ** 20;
    return {
      used: value('nodejs_heap_size_used_bytes'),
      total: value('nodejs_heap_size_total_bytes'),
      external: value('nodejs_external_memory_bytes'),
    };
  } catch {
    return undefined;
  }
}

/** CPU seconds (user + system) a process has used. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command.
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Removes what any earlier agent of this node left (dataplane and record): the next sync is from scratch. */
export async function resetNode(
  backend: BackendName,
  target: { scope: string; node: string; netns: string },
  stateDir: string,
): Promise<void> {
  await (await loadBackend(backend)).remove(target);
  rmSync(stateDir, { recursive: true, force: true });
}

/**
 * With `SWITCHYARD_BENCH_HEAPSNAPSHOT=sync,changes,repair` (any of them) and the agents started under
 * `NODE_OPTIONS=--heapsnapshot-signal=SIGUSR2`, asks the agent for a V8 heap snapshot at that
 * point (written into its working directory, the bench's) and waits until it is written: the tool
 * behind the memory budget in docs/agent.md. Taking one grows the agent's RSS for good (V8's
 * snapshot generator allocates several times the heap outside it), so the RSS figures measured
 * after a snapshot are not the agent's own: take `changes` alone for a run whose RSS counts.
 * Does nothing otherwise.
 */
export async function heapSnapshot(
  h: LaunchedAgent,
  label: 'sync' | 'changes' | 'repair',
): Promise<string | undefined> {
  if (!(process.env.SWITCHYARD_BENCH_HEAPSNAPSHOT ?? '').split(',').includes(label)) return undefined;
  const dir = process.cwd();
  const ours = (): string[] =>
    readdirSync(dir).filter((f) => f.endsWith('.heapsnapshot') && f.includes(`.${h.pid}.`));
  const before = new Set(ours());
  process.kill(h.pid, 'SIGUSR2');
  for (let waited = 0; waited < 120_000; waited += 500) {
    await new Promise((r) => setTimeout(r, 500));
    const fresh = ours().find((f) => !before.has(f));
    // V8 writes into the file it names; the agent answers its API again once it is done.
    if (fresh && (await agentHeapMiB(h)) !== undefined) {
      const named = join(dir, `agent-${label}-${fresh}`);
      renameSync(join(dir, fresh), named);
      return named;
    }
  }
  return undefined;
}
