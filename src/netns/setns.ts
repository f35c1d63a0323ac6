import { check, CLONE_NEWNET, libc, O_CLOEXEC, O_RDONLY } from './libc.js';
import { netnsPath } from './namespaces.js';

let home: number | undefined;
let inside: string | undefined;

/**
 * Runs `fn` with the calling thread inside the named network namespace, then switches back.
 * Synchronous on purpose: anything `fn` opens (sockets, /proc/sys/net files) belongs to that
 * namespace, and nothing else on the event loop can run while the thread is away.
 */
export function withNetns<T>(name: string, fn: () => T): T {
  if (inside !== undefined) throw new Error(`withNetns(${name}) nested inside withNetns(${inside})`);
  const c = libc();
  // The thread's own namespace, opened once: the way home.
  home ??= check(c.open('/proc/thread-self/ns/net', O_RDONLY | O_CLOEXEC), 'open /proc/thread-self/ns/net');
  const fd = check(c.open(netnsPath(name), O_RDONLY | O_CLOEXEC), `open ${netnsPath(name)}`);
  try {
    check(c.setns(fd, CLONE_NEWNET), `setns into ${name}`);
  } finally {
    c.close(fd);
  }
  inside = name;
  try {
    const result = fn();
    if (result instanceof Promise) throw new Error('withNetns needs a synchronous function');
    return result;
  } finally {
    inside = undefined;
    // Staying in the wrong namespace would silently misplace every later socket: fail loudly.
    check(c.setns(home, CLONE_NEWNET), 'setns back to the original network namespace');
  }
}
