/**
 * Running things in the lab's outside clients: for `lab exec outside:NAME`, `lab probe --from
 * outside:NAME`, benches and tests. A client has no cgroup of the lab's: what runs there is not a
 * workload, so the lab's cgroup socket hooks never see it.
 */
import type { ChildProcess, StdioOptions } from 'node:child_process';
import { inNetnsArgv, runCommand, spawnInNetns, type RunResult } from '../netns/index.js';
import { LabError } from './errors.js';
import { OUTSIDE_REF_PREFIX, type LabOutside } from './outside.js';
import { readyState } from './reach.js';
import type { Topology } from './topology.js';

export function findOutside(t: Topology, name: string): LabOutside {
  const client = t.outside?.find((o) => o.name === name);
  if (!client) {
    const known = (t.outside ?? []).map((o) => `${OUTSIDE_REF_PREFIX}${o.name}`);
    throw new LabError(
      `lab '${t.lab}' has no outside client '${name}' (outside clients: ${known.join(', ') || "none: run 'switchyard lab up' again"})`,
    );
  }
  return client;
}

/** The outside client `name` of a running lab (its namespace and address). */
export function outsideClient(lab: string, name: string): LabOutside {
  return findOutside(readyState(lab).topology, name);
}

/** Starts `argv` inside outside client `name` of `lab` (stdio inherited unless given). */
export function spawnOutside(
  lab: string,
  name: string,
  argv: readonly string[],
  opts: { stdio?: StdioOptions; env?: NodeJS.ProcessEnv; via?: 'nsenter' | 'ip-netns-exec' } = {},
): ChildProcess {
  const client = outsideClient(lab, name);
  return spawnInNetns({ netns: client.netns, argv, ...opts });
}

/** Runs `argv` to completion inside outside client `name` of `lab`; never throws for a non-zero exit. */
export function runOutside(
  lab: string,
  name: string,
  argv: readonly string[],
  input?: string,
): Promise<RunResult> {
  const [file, ...args] = inNetnsArgv({ netns: outsideClient(lab, name).netns, argv });
  return runCommand(file as string, args, input);
}
