import { writeFileSync } from 'node:fs';
import { errorMessage } from '../util/errors.js';
import { withNetns } from './setns.js';

/**
 * Writes sysctls of one namespace, e.g. `['net/ipv4/ip_forward', '1']`. Keys use `/` because
 * interface names may contain dots. /proc/sys/net belongs to the namespace of the thread that
 * opens it, so this is one setns round trip instead of one `ip netns exec sysctl` per namespace.
 */
export function writeSysctls(netns: string, entries: readonly (readonly [string, string])[]): void {
  if (entries.length === 0) return;
  withNetns(netns, () => {
    for (const [key, value] of entries) {
      try {
        writeFileSync(`/proc/sys/${key}`, value);
      } catch (e) {
        throw new Error(`cannot set ${key}=${value} in ${netns}: ${errorMessage(e)}`, { cause: e });
      }
    }
  });
}
