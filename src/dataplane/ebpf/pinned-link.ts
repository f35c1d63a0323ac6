import { rmSync } from 'node:fs';
import { isPinned, Link } from '../../bpf/index.js';

/**
 * Detaches a pinned link and removes its pin. The thing it was attached to (an interface, a
 * cgroup) may be gone already, which makes the link defunct: that is not an error here.
 */
export function dropPinnedLink(path: string): void {
  if (!isPinned(path)) return;
  try {
    const link = Link.fromPin(path);
    try {
      link.detach();
    } catch {
      // defunct: its interface or cgroup went first
    } finally {
      link.close();
    }
  } finally {
    rmSync(path, { force: true });
  }
}
