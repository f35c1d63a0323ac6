/** An agent's status as table cells, the same in `switchyard node status` and the demo. */
import type { AgentStatus } from '../agent/agent.js';

/** Node, backend, pid, revision in force, last apply and repairs. */
export function agentStatusCells(s: AgentStatus): (string | number)[] {
  return [
    s.node,
    s.backend,
    s.pid,
    s.revision ?? '-',
    s.lastApply ? `${s.lastApply.mode} ${s.lastApply.durationMs} ms` : '-',
    s.repairs,
  ];
}

/** What decides the node's rule sets: `walk`, or `table 12/13` (tables of all rule sets). */
export function policyCell(s: AgentStatus): string {
  const p = s.policy;
  if (!p) return '-';
  if (p.mode === 'walk') return 'walk';
  return `table ${p.tables}/${p.tables + p.walked}`;
}
