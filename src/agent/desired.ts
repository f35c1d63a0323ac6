/**
 * Desired state as the agent sees it: the IR of the whole cluster (the agent applies its node's
 * slice), plus what only some sources know — the model behind it (for explain), and which
 * cgroup each pod runs in (for process context on flows).
 */
import type { IrChange } from '../ir/delta.js';
import type { IR } from '../ir/types.js';
import type { Model } from '../model/index.js';

export interface DesiredState {
  /** Changes whenever the state does; agents report the revision they have in force. */
  revision: string;
  ir: IR;
  /**
   * How `ir` came from the IR the source handed out before (an incremental calculation's delta):
   * the agent passes it to the backend when that IR is the one in force.
   */
  change?: IrChange;
  model?: Model;
  /** Pod id → cgroup v2 directory. */
  cgroups?: Record<string, string>;
}

/** Where desired state comes from: a directory (dir-source.ts) or etcd (etcd-source.ts). */
export interface DesiredSource {
  /** For logs and status: `dir:/path`. */
  readonly description: string;
  /** The current desired state; throws SourceError when it cannot be used (the last good one stays in force). */
  read(): Promise<DesiredState>;
  /**
   * Calls `onChange` (possibly more than once) after the state may have changed; returns a stop
   * function. `complete`: the change is whole and may be read at once (a file renamed into place,
   * an etcd watch event); otherwise more may follow (a file being written) and the agent waits
   * for a quiet moment.
   */
  watch(onChange: (complete?: boolean) => void): () => void;
  /** Live counters of the source's own (etcd: connected, lists, resumes, compactions), shown in status. */
  readonly stats?: Readonly<Record<string, number | boolean | undefined>>;
}

export class SourceError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'SourceError';
  }
}

/** `etcd:http://HOST:PORT` names an etcd as the source; anything else is a directory. */
export const ETCD_SOURCE_PREFIX = 'etcd:';

export function isEtcdSource(source: string): boolean {
  return source.startsWith(ETCD_SOURCE_PREFIX);
}

/** File name of a compiled desired state in a source directory (what `lab up` writes for its agents). */
export const DESIRED_FILE = 'desired.json';
