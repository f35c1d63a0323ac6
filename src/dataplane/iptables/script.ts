/**
 * iptables-restore text for one table. Always used with --noflush: only the chains declared here
 * (ours, `:SY-… - [0:0]`, which creates or flushes them) change; built-in chains are never
 * declared (that would reset their policy) and only get our jump inserted or deleted.
 */
import type { ChainSpec, JumpSpec, TableName } from './plan.js';

export interface TableChange {
  /** Chains created or flushed, then filled. */
  write: ChainSpec[];
  /** Chains flushed, then deleted once nothing refers to them. */
  deleteChains: string[];
  insertJumps: JumpSpec[];
  deleteJumps: JumpSpec[];
}

export function isEmptyChange(c: TableChange): boolean {
  return !c.write.length && !c.deleteChains.length && !c.insertJumps.length && !c.deleteJumps.length;
}

export function restoreScript(table: TableName, change: TableChange): string {
  const lines = [`*${table}`];
  for (const c of change.write) lines.push(`:${c.name} - [0:0]`);
  for (const name of change.deleteChains) lines.push(`:${name} - [0:0]`);
  for (const c of change.write) for (const r of c.rules) lines.push(`-A ${c.name} ${r}`);
  for (const j of change.deleteJumps) lines.push(`-D ${j.builtin} ${j.rule}`);
  for (const j of change.insertJumps) lines.push(`-I ${j.builtin} 1 ${j.rule}`);
  for (const name of change.deleteChains) lines.push(`-X ${name}`);
  lines.push('COMMIT');
  return lines.join('\n') + '\n';
}
