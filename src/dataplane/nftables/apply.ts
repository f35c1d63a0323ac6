/** Runs an nft script as one transaction inside a node namespace; failures become ApplyErrors that point at the script line. */
import { ApplyError } from '../backend.js';
import { runInNetns, scriptContext, type ToolResult } from '../exec.js';
import { TABLE_REF } from './names.js';

/** nft names the input file, then `LINE:COL-COL: Error: …`, for every command it rejects. */
const LOCATION = /^[^\s:]+:(\d+):\d+(?:-\d+)?: Error: (.*)$/m;

export function nftFailure(script: string, result: ToolResult, what: string): ApplyError {
  const stderr = result.stderr.trim() || result.stdout.trim() || `nft exited with ${result.code}`;
  const m = LOCATION.exec(stderr);
  if (!m)
    return new ApplyError(
      `nft rejected the ${what}; the previous ruleset is still in force`,
      'nftables',
      stderr,
    );
  const line = Number(m[1]);
  return new ApplyError(
    `nft rejected line ${line} of the ${what}: ${m[2]}; the previous ruleset is still in force`,
    'nftables',
    `${scriptContext(script, line)}\n\nnft said:\n${stderr}`,
  );
}

/** Feeds the script on stdin (`-f /dev/stdin`): nothing touches the disk and line numbers stay the script's own. */
export async function runScript(netns: string, script: string, what: string): Promise<void> {
  const r = await runInNetns(netns, 'nft', ['-f', '/dev/stdin'], script);
  if (r.code !== 0) throw nftFailure(script, r, what);
}

/** Check mode: parses and validates against the kernel without committing. */
export async function checkScript(netns: string, script: string): Promise<ToolResult> {
  return runInNetns(netns, 'nft', ['-c', '-f', '/dev/stdin'], script);
}

/** `list tables` rather than `list table`: the answer should not cost a dump of 50k rules. */
export async function tableExists(netns: string): Promise<boolean> {
  const r = await runInNetns(netns, 'nft', ['list', 'tables']);
  return r.code === 0 && r.stdout.split('\n').some((l) => l.trim() === `table ${TABLE_REF}`);
}
