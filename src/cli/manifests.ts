import type { AllocateOptions } from '../calc/index.js';
import { formatIssue, validateManifests, type Model } from '../model/index.js';
import { CliError } from './output.js';
import { errorMessage } from '../util/errors.js';

/** Loads manifests for a command, turning validation problems into one CLI error listing all of them. */
export function loadModelOrFail(paths: readonly string[]): Model {
  if (paths.length === 0) throw new CliError('no manifest files given', 2, { code: 'missing-argument' });
  let result;
  try {
    result = validateManifests(paths);
  } catch (e) {
    throw new CliError(errorMessage(e), 1, { cause: e });
  }
  if (!result.model)
    throw new CliError(`invalid manifests:\n${result.issues.map(formatIssue).join('\n')}`, 1, {
      code: 'invalid-manifests',
      details: { issues: result.issues },
    });
  return result.model;
}

export function parseNodeCount(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 200)
    throw new CliError(`--nodes must be a whole number from 1 to 200, not '${v}'`, 2);
  return n;
}

export function parsePort(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new CliError(`port must be 1-65535, not '${v}'`, 2);
  return n;
}

export function parseProtocol(v: string): 'TCP' | 'UDP' | 'SCTP' {
  const p = v.toUpperCase();
  if (p !== 'TCP' && p !== 'UDP' && p !== 'SCTP')
    throw new CliError(`--protocol must be TCP, UDP or SCTP, not '${v}'`, 2);
  return p;
}

/**
 * allocate()'s options for a command's `--nodes` and `--family`: asking about IPv6 gives every pod
 * an IPv6 address as the lab does (without --family, pods keep only what they state, as before).
 */
export function allocateOptions(opts: { nodes?: number; family?: 4 | 6 }): AllocateOptions {
  return {
    ...(opts.nodes ? { nodeCount: opts.nodes } : {}),
    ...(opts.family === 6 ? { dualStackPods: true } : {}),
  };
}
