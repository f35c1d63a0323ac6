/**
 * Change events of a node's nf_tables rulesets (nftables, and iptables in its nf_tables flavour),
 * so drift is noticed in milliseconds rather than at the next poll. The monitor is a child
 * process that dies with the agent (parent-death signal), so a SIGKILLed agent leaves none behind.
 */
import { spawn } from 'node:child_process';
import type { ChangeWatch, NodeTarget } from '../backend.js';

export function watchRulesetChanges(target: NodeTarget, onChange: () => void): ChangeWatch {
  if (!target.netns.startsWith('sy-'))
    throw new Error(`refusing to watch outside a project namespace (${target.netns})`);
  const child = spawn(
    'setpriv',
    ['--pdeathsig', 'KILL', 'ip', 'netns', 'exec', target.netns, 'nft', 'monitor', 'ruleset'],
    { stdio: ['ignore', 'pipe', 'ignore'] },
  );
  child.on('error', () => undefined);
  child.stdout.on('data', () => onChange());
  return {
    stop: () => {
      child.kill('SIGKILL');
    },
  };
}
