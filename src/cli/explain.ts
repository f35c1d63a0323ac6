import type { Command } from 'commander';
import { allocate, buildIR, explain, type SideExplanation } from '../calc/index.js';
import type { Protocol } from '../ir/types.js';
import { CliError, printJson } from './output.js';
import { loadModelOrFail, parseNodeCount, parsePort } from './manifests.js';
import { errorMessage } from '../util/errors.js';

function sideLines(s: SideExplanation): string[] {
  const lines = [`  ${s.text}`];
  if (s.globalPolicies.length)
    lines.push(`    global policies selecting ${s.endpoint}: ${s.globalPolicies.join(', ')}`);
  if (s.networkPolicies.length)
    lines.push(`    network policies selecting ${s.endpoint}: ${s.networkPolicies.join(', ')}`);
  if (s.rule?.source) lines.push(`    rule ${s.rule.id} (${s.rule.source})`);
  if (s.passedBy) lines.push(`    passed by ${s.passedBy.policy} rule ${s.passedBy.ruleIndex}`);
  for (const l of s.logged) lines.push(`    logged by ${l.policy} rule ${l.ruleIndex}`);
  return lines;
}

export function register(program: Command): void {
  program
    .command('explain')
    .description(
      'why a new connection is allowed or denied: which policies select each end and which rule decided',
    )
    .argument('<paths...>', 'manifest files or directories')
    .requiredOption('--from <pod|address>', 'source: namespace/pod or an address outside the cluster')
    .requiredOption('--to <pod|address>', 'destination: namespace/pod or an address outside the cluster')
    .option('--port <port>', 'destination port', parsePort)
    .option('--protocol <protocol>', 'TCP, UDP, SCTP or ICMP', 'TCP')
    .option('--nodes <n>', 'nodes to spread unplaced pods over (matters for prefilters)', parseNodeCount)
    .option('--lab <name>', 'also show the kernel drops this running lab saw between the two (drop reasons)')
    .option('--json', 'machine-readable explanation')
    .action(
      async (
        paths: string[],
        opts: {
          from: string;
          to: string;
          port?: number;
          protocol: string;
          nodes?: number;
          lab?: string;
          json?: boolean;
        },
      ) => {
        const protocol = opts.protocol.toUpperCase();
        if (!['TCP', 'UDP', 'SCTP', 'ICMP'].includes(protocol))
          throw new CliError(`--protocol must be TCP, UDP, SCTP or ICMP, not '${opts.protocol}'`, 2);
        if (protocol !== 'ICMP' && opts.port === undefined)
          throw new CliError(`--port is needed for ${protocol}`, 2);
        const model = loadModelOrFail(paths);
        const ir = buildIR(model, allocate(model, {}, opts.nodes ? { nodeCount: opts.nodes } : {}));
        let result;
        try {
          result = explain(model, ir, {
            from: opts.from,
            to: opts.to,
            protocol: protocol as Protocol,
            ...(opts.port !== undefined ? { port: opts.port } : {}),
          });
        } catch (e) {
          throw new CliError(errorMessage(e), 2, { cause: e });
        }
        // A measured failure that policy allows: what the kernel said when it dropped the packets.
        const kernelDrops = opts.lab
          ? await (await import('../lab/index.js')).labDropHints(opts.lab, opts.from, opts.to)
          : [];
        if (opts.json) return printJson(opts.lab ? { ...result, kernelDrops } : result);
        const lines = [
          result.summary.replace(/: (allowed|denied)/, (_, v: string) => `: ${v.toUpperCase()}`),
        ];
        const fmt = (e: typeof result.from): string =>
          e.endpoint ? `${e.endpoint} (${e.address} on ${e.node})` : `${e.address} (outside the cluster)`;
        lines.push(`  from ${fmt(result.from)} to ${fmt(result.to)}`);
        if (result.egress) lines.push(...sideLines(result.egress));
        else if (result.decidedAt !== 'same-pod')
          lines.push('  egress: source is outside the cluster, no egress policy applies');
        if (result.prefilter && !result.prefilterReply)
          lines.push(`  prefilter ${result.prefilter} drops ${result.from.address} at ${result.to.node}`);
        if (result.ingress) lines.push(...sideLines(result.ingress));
        else if (result.decidedAt === 'allowed')
          lines.push('  ingress: destination is outside the cluster, no ingress policy applies');
        if (opts.lab) {
          const { hintLine } = await import('../lab/index.js');
          lines.push(
            kernelDrops.length
              ? `  kernel drops seen in lab ${opts.lab}:\n${kernelDrops.map((h) => `    ${hintLine(h)}`).join('\n')}`
              : `  kernel drops seen in lab ${opts.lab}: none`,
          );
        }
        process.stdout.write(lines.join('\n') + '\n');
      },
    );
}
