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
