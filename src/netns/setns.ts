import { existsSync } from 'node:fs';
import { check, CLONE_NEWNET, libc, O_CLOEXEC, O_RDONLY } from './libc.js';
import { netnsPath } from './namespaces.js';

/**
 * Network namespace switching for the calling thread. setns(2) moves only that thread: in Node's
 * main thread libuv's pool and koffi's workers stay where they were, which is what we want. Sockets
 * and /proc/sys/net files opened while inside belong to the namespace, and BPF_LINK_CREATE resolves
 * XDP/tcx targets (ifindexes are per namespace) in the caller's one.
 */

let home: number | undefined;
let inside: string | undefined;

/** Opens /run/netns/NAME; the caller closes the fd. */
export function openNetns(name: string): number {
  const path = netnsPath(name);
  if (!existsSync(path)) throw new Error(`network namespace '${name}' does not exist (no ${path})`);
  return check(libc().open(path, O_RDONLY | O_CLOEXEC), `open ${path}`);
}

function enter(netns: string | number, label: string): void {
  const c = libc();
  const fd = typeof netns === 'number' ? netns : openNetns(netns);
  try {
    check(c.setns(fd, CLONE_NEWNET), `setns into ${label}`);
  } finally {
    if (typeof netns !== 'number') c.close(fd);
  }
}

/**
 * Runs `fn` with the calling thread inside network namespace `netns` (a name, or an open netns
 * fd the caller keeps), then switches back, even when `fn` throws. Synchronous on purpose: code
 * after an `await` would run in whatever namespace the thread is in by then, and nothing else on
 * the event loop can run while the thread is away. Not nestable: the way home is the namespace
 * the thread started in.
 */
export function withNetns<T>(netns: string | number, fn: () => T): T {
  const label = typeof netns === 'number' ? `netns fd ${netns}` : netns;
  if (inside !== undefined) throw new Error(`withNetns(${label}) nested inside withNetns(${inside})`);
  const c = libc();
  // The thread's own namespace, opened once: the way home.
  home ??= check(c.open('/proc/thread-self/ns/net', O_RDONLY | O_CLOEXEC), 'open /proc/thread-self/ns/net');
  enter(netns, label);
  inside = label;
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
    inside = undefined;
    // Staying in the wrong namespace would silently misplace every later socket: fail loudly.
    check(c.setns(home, CLONE_NEWNET), 'setns back to the original network namespace');
  }
}
