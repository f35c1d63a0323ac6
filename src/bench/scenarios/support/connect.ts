/** Batches of concurrent TCP connects from a lab pod, each timed to its completed handshake. */
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { moveToCgroup, startConnects, type Connecting } from '../../../netns/index.js';

export interface ConnectTarget {
  address: string;
  port: number;
}

export interface ConnectBatch {
  /** Milliseconds to each established connection; undefined where it failed or timed out. */
  handshakes: (number | undefined)[];
  /** Wall time of the whole batch, from before the first connect. */
  ms: number;
}

function established(fd: number, timeoutMs: number): Promise<number | undefined> {
  const start = performance.now();
  return new Promise((resolve) => {
    const sock = new net.Socket({ fd, readable: true, writable: true });
    let done = false;
    const finish = (ms: number | undefined): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(ms);
    };
    const timer = setTimeout(() => finish(undefined), timeoutMs);
    // The write completes once the handshake has.
    sock.write('\n', (err) => finish(err ? undefined : performance.now() - start));
    sock.on('error', () => finish(undefined));
  });
}

/**
 * Connects to every target at once from the pod's network namespace and cgroup (this process
 * joins the pod's cgroup just while the sockets are made, then returns to `home`).
 */
export async function connectBatch(
  pod: { netns: string; cgroup: string },
  targets: readonly ConnectTarget[],
  home: string,
  timeoutMs: number,
): Promise<ConnectBatch> {
  const start = performance.now();
  moveToCgroup(pod.cgroup, process.pid);
  let connecting: Connecting[];
  try {
    connecting = startConnects(
      pod.netns,
      targets.map((t) => ({ ...t, protocol: 'TCP' as const })),
    );
  } finally {
    moveToCgroup(home, process.pid);
  }
  const handshakes = await Promise.all(
    connecting.map((c) => ('error' in c ? Promise.resolve(undefined) : established(c.fd, timeoutMs))),
  );
  return { handshakes, ms: performance.now() - start };
}
