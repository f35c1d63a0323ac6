import type { Command } from 'commander';

/** Each CLI command lives in its own file and registers itself on the program. */
export type RegisterCommand = (program: Command) => void;

// Keep one line per command file; order is the order in `switchyard --help`.
export const commandModules: (() => Promise<{ register: RegisterCommand }>)[] = [
  () => import('./demo.js'),
  () => import('./validate.js'),
  () => import('./explain.js'),
  () => import('./reach.js'),
  () => import('./compile.js'),
  () => import('./lab.js'),
  () => import('./cluster.js'),
  () => import('./apply.js'),
  () => import('./get.js'),
  () => import('./agent.js'),
  () => import('./supervise.js'),
  () => import('./flows.js'),
  () => import('./console.js'),
  () => import('./node.js'),
  () => import('./bench.js'),
  () => import('./advise.js'),
  () => import('./completion.js'),
];

/**
 * Commands a long-running process of its own runs (an agent, its supervisor): `main` registers
 * only that command's module for them, not every command's. Loading them all brought the lab's,
 * cluster's, console's and bench's module graphs (the etcd client with gRPC and protobuf,
 * cockatiel, cli-progress, OpenTelemetry) into every agent: 15.6 MiB of RSS and 6.3 MiB of heap
 * (in-process, after collections) for code it never runs
 * (docs/agent.md, "Memory budget"). Their `--help` is their own and needs no other command.
 */
export const soloCommands: ReadonlyMap<string, () => Promise<{ register: RegisterCommand }>> = new Map([
  ['agent', () => import('./agent.js')],
  ['supervise-agent', () => import('./supervise.js')],
]);
