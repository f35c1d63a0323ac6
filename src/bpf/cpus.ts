import { readFileSync } from 'node:fs';

/** Parses a kernel CPU list such as "0-3,8,10-11". */
export function parseCpuList(text: string): number[] {
  const cpus: number[] = [];
  for (const part of text.trim().split(',')) {
    if (!part) continue;
    const [from, to] = part.split('-').map((n) => Number(n));
    if (from === undefined || !Number.isInteger(from)) throw new Error(`malformed CPU list '${text.trim()}'`);
    const last = to === undefined ? from : to;
    if (!Number.isInteger(last) || last < from) throw new Error(`malformed CPU list '${text.trim()}'`);
    for (let cpu = from; cpu <= last; cpu++) cpus.push(cpu);
  }
  return cpus;
}

let possible: number | undefined;

/**
 * Per-CPU map values come as one slot per *possible* CPU (not online), in CPU order; this is
 * how many slots the kernel reads and writes.
 */
export function possibleCpuCount(): number {
  possible ??= parseCpuList(readFileSync('/sys/devices/system/cpu/possible', 'utf8')).length;
  return possible;
}
