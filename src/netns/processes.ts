/** Finding our own long-running processes (probe servers, agents) by a marker on their command line. */
import { readdirSync, readFileSync } from 'node:fs';

export interface MarkedProcess {
  pid: number;
  argv: string[];
}

function parentPid(pid: number): number {
  try {
    // /proc/PID/stat: "pid (comm) state ppid …"; comm may hold spaces and parentheses.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return 0;
  }
}

/**
 * Processes whose command line has `mark` as one of its arguments. A marked process's child
 * between fork and exec still shows the parent's command line: children of marked processes are
 * left out.
 */
export function findMarkedProcesses(mark: string): MarkedProcess[] {
  const found: MarkedProcess[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    if (argv.includes(mark)) found.push({ pid: Number(entry), argv });
  }
  const pids = new Set(found.map((p) => p.pid));
  return found.filter((p) => !pids.has(parentPid(p.pid)));
}

/** The value after `flag` in `argv`, or ''. */
export function argValue(argv: readonly string[], flag: string): string {
  const i = argv.indexOf(flag);
  return i >= 0 ? (argv[i + 1] ?? '') : '';
}
