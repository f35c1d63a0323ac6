import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { netnsPath } from './namespaces.js';
import { requireTool } from './tools.js';

export interface InNetnsCommand {
  netns: string;
  /** Absolute cgroup2 directory to join before exec (socket hooks and flow attribution need it). */
  cgroup?: string;
  argv: readonly string[];
  /**
   * `nsenter` only switches the network namespace (fast: probe clients); `ip-netns-exec` also
   * remounts /sys and applies /etc/netns/NAME, as a user running a tool by hand expects.
   */
  via?: 'nsenter' | 'ip-netns-exec';
  stdio?: StdioOptions;
  env?: NodeJS.ProcessEnv;
}

// The shell joins the cgroup with its own pid, then execs: the command is in the cgroup from its
// first instruction, and no pid of ours ever runs outside it afterwards.
const WRAPPER = 'cg=$1; shift; if [ -n "$cg" ]; then echo $$ > "$cg/cgroup.procs" || exit 125; fi; exec "$@"';

/** The argv that runs a command inside a network namespace (and cgroup). */
export function inNetnsArgv(cmd: InNetnsCommand): string[] {
  const enter =
    (cmd.via ?? 'nsenter') === 'nsenter'
      ? [requireTool('nsenter'), `--net=${netnsPath(cmd.netns)}`, '--']
      : [requireTool('ip'), 'netns', 'exec', cmd.netns];
  return [requireTool('sh'), '-c', WRAPPER, 'sh', cmd.cgroup ?? '', ...enter, ...cmd.argv];
}

export function spawnInNetns(cmd: InNetnsCommand): ChildProcess {
  const [file, ...args] = inNetnsArgv(cmd);
  return spawn(file as string, args, { stdio: cmd.stdio ?? 'inherit', env: cmd.env ?? process.env });
}
