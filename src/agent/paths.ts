/** Where agents keep their record and socket, and how they are recognised among processes. */
import { join } from 'node:path';

/** Standalone agents: /run/switchyard/agents/<scope>/<node>/ (lab agents live in the lab's directory). */
export const AGENTS_ROOT = '/run/switchyard/agents';

export function defaultStateDir(scope: string, node: string): string {
  return join(AGENTS_ROOT, scope, node);
}

export function apiSocket(stateDir: string): string {
  return join(stateDir, 'api.sock');
}

export function agentLog(stateDir: string): string {
  return join(stateDir, 'agent.log');
}

/** The first argument after `agent` on an agent's command line, so `lab down --all` can find strays. */
export const AGENT_MARK = '--switchyard-agent';
