import { closeSync, existsSync, openSync } from 'node:fs';
import { bpfError } from './errors.js';
import { rawSetns } from './sys.js';

/**
 * Network namespace switching for the calling thread. ifindexes are per namespace and
 * BPF_LINK_CREATE resolves XDP/tcx targets in the caller's namespace, so links on interfaces
 * inside a namespace are made from within it. setns(2) moves only the calling thread: in Node's
 * main thread that leaves libuv's thread pool and koffi's workers where they were, which is
 * what we want, and the switch is always undone in a finally.
 */

const CLONE_NEWNET = 0x4000_0000;
const NETNS_RUN_DIR = '/run/netns';

/** Path of a named namespace as `ip netns add` creates it. */
export function netnsPath(name: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(name)) throw new Error(`invalid network namespace name '${name}'`);
  return `${NETNS_RUN_DIR}/${name}`;
}

/** Opens /run/netns/NAME; the caller closes the fd. */
export function openNetns(name: string): number {
  const path = netnsPath(name);
  if (!existsSync(path)) throw new Error(`network namespace '${name}' does not exist (no ${path})`);
  return openSync(path, 'r');
}

function setns(fd: number, what: string): void {
  const result = rawSetns(fd, CLONE_NEWNET);
  if (result < 0) throw bpfError(-result, { operation: 'setns', subject: what });
}

/**
 * Runs `fn` with this thread inside network namespace `name` (or an open netns fd), switching back
 * afterwards even if `fn` throws. `fn` must be synchronous: code after an `await` would run in
 * whatever namespace the thread is in by then.
 */
export function withNetns<T>(netns: string | number, fn: () => T): T {
  const original = openSync('/proc/thread-self/ns/net', 'r');
  const target = typeof netns === 'number' ? netns : openNetns(netns);
  const label = typeof netns === 'number' ? `netns fd ${netns}` : `netns '${netns}'`;
  try {
    setns(target, label);
    try {
      const result = fn();
      if (result instanceof Promise) {
        // Swallow the eventual rejection: the caller gets the explanation below instead.
        result.catch(() => undefined);
        throw new Error(
          'withNetns needs a synchronous function: the namespace is restored before any await resumes',
        );
      }
      return result;
    } finally {
      setns(original, 'the original netns');
    }
  } finally {
    closeSync(original);
    if (typeof netns !== 'number') closeSync(target);
  }
}
