import { join } from 'node:path';
import { requireRoot, requireTools, spawnInNetns } from '../netns/index.js';
import { findPod, readyState } from './reach.js';

/**
 * Runs a command inside a pod's network namespace and cgroup with the terminal attached, and
 * resolves with its exit status (128 + signal number when killed, as shells report it).
 */
export async function labExec(name: string, podId: string, argv: readonly string[]): Promise<number> {
  requireRoot('switchyard lab exec');
  requireTools(['ip', 'sh']);
  const state = readyState(name);
  const pod = findPod(state, podId);
  const child = spawnInNetns({
    netns: pod.netns,
    cgroup: join(state.cgroupRoot, pod.slug),
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
