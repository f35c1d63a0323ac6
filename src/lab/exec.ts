import { join } from 'node:path';
import { requireRoot, requireTools, spawnInNetns } from '../netns/index.js';
import { findOutside } from './outside-exec.js';
import { outsideRef } from './outside.js';
import { findPod, readyState } from './reach.js';

/**
 * Runs a command inside a pod's network namespace and cgroup (or an outside client's namespace,
 * `outside:NAME`) with the terminal attached, and
 * resolves with its exit status (128 + signal number when killed, as shells report it).
 */
export async function labExec(name: string, podId: string, argv: readonly string[]): Promise<number> {
  requireRoot('switchyard lab exec');
  requireTools(['ip', 'sh']);
  const state = readyState(name);
  const outside = outsideRef(podId);
  // An outside client has a namespace but no cgroup of the lab's.
  const where =
    outside === undefined
      ? (() => {
          const pod = findPod(state, podId);
          return { netns: pod.netns, cgroup: join(state.cgroupRoot, pod.slug) };
        })()
      : { netns: findOutside(state.topology, outside).netns };
  const child = spawnInNetns({
    ...where,
    argv,
    via: 'ip-netns-exec',
    stdio: 'inherit',
  });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      const signals: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 };
      resolve(code ?? 128 + (signal ? (signals[signal] ?? 1) : 1));
    });
  });
}
