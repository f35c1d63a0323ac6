/**
 * The netfilter backends keep connections in the kernel's own conntrack, per network namespace:
 * `conntrack -C` counts them and `conntrack -L -o extended` lists them. The kernel expires
 * entries itself, so there is no garbage to collect from user space.
 */
import type { ConntrackEntry, ConntrackView, NodeTarget } from '../backend.js';
import { runInNetns, runInNetnsOrThrow } from '../exec.js';
import { parseConntrackLine } from './conntrack-line.js';

/** `ipv4 2 tcp 6 431999 ESTABLISHED src=…`: protocol name, seconds left and (TCP) state. */
const HEAD = /^\s*ipv[46]\s+\d+\s+(\S+)\s+\d+\s+(\d+)\s+(?:([A-Z_]+)\s+)?src=/;

export function parseConntrackEntry(line: string): ConntrackEntry | undefined {
  const head = HEAD.exec(line);
  const parsed = parseConntrackLine(line);
  if (!head || !parsed) return undefined;
  return {
    protocol: (head[1] as string).toUpperCase(),
    src: parsed.src,
    sport: parsed.sport,
    dst: parsed.dst,
    dport: parsed.dport,
    state: head[3] ?? '-',
    replied: !line.includes('[UNREPLIED]'),
    expiresInSeconds: Number(head[2]),
    ...(parsed.packets ? { packets: parsed.packets[0] + parsed.packets[1] } : {}),
    ...(parsed.bytes ? { bytes: parsed.bytes[0] + parsed.bytes[1] } : {}),
  };
}

export function kernelConntrack(target: NodeTarget): ConntrackView {
  return {
    description: `kernel conntrack of ${target.netns}`,
    async count(): Promise<number> {
      const r = await runInNetns(target.netns, 'conntrack', ['-C']);
      return Number(r.stdout.trim()) || 0;
    },
    async list(): Promise<ConntrackEntry[]> {
      const r = await runInNetnsOrThrow(target.netns, 'conntrack', ['-L', '-o', 'extended']);
      return r.stdout
        .split('\n')
        .map(parseConntrackEntry)
        .filter((e): e is ConntrackEntry => e !== undefined);
    },
  };
}
