/**
 * Writes nf_tables refuses, on request: for tests that need a node's apply to fail in the kernel
 * (lab-born-closed: a new pod stays closed and the previous policy in force), whichever way the
 * backend writes — rule batch, members-only change or `nft -f`. Each write gets one more step
 * that deletes an object that does not exist, last, so the kernel refuses the transaction after
 * having seen all of its real changes: nothing of it is in force.
 */
import { existsSync } from 'node:fs';
import type { SetElementChange } from './member-delta.js';
import type { BatchMessage } from './nfnetlink.js';
import { chainDeletion } from './rule-batch.js';

/** No chain or set of the table has this name (ours start with a direction or `sy-`). */
const MISSING = 'refused-missing';

/** A DELCHAIN of a chain that does not exist: nf_tables refuses it (ENOENT), and the batch with it. */
export function missingChainDeletion(table: string): BatchMessage {
  return chainDeletion(table, MISSING);
}

export interface WriteHooks {
  mutateScript: (script: string) => string;
  mutateMembers: (changes: SetElementChange[]) => SetElementChange[];
  mutateBatch: (messages: BatchMessage[]) => BatchMessage[];
}

/** Hooks that make every write of `table` fail in the kernel while `file` exists. */
export function refuseWhileFileExists(file: string, family: string, table: string): WriteHooks {
  const on = (): boolean => existsSync(file);
  return {
    mutateScript: (script) => (on() ? `${script}\ndelete chain ${family} ${table} ${MISSING}\n` : script),
    mutateMembers: (changes) =>
      on()
        ? [
            ...changes,
            {
              kind: 'set',
              name: MISSING,
              flush: false,
              remove: [{ key: Buffer.alloc(4), flags: 0 }],
              add: [],
            },
          ]
        : changes,
    mutateBatch: (messages) => (on() ? [...messages, missingChainDeletion(table)] : messages),
  };
}
