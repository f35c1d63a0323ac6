import type { Command } from 'commander';
import {
  allocate,
  buildIR,
  destinationHasPort,
  explain,
  impliedFamily,
  otherSourceText,
  type Explanation,
  type ExternalEntryExplanation,
  type ServiceExplanation,
  type SideExplanation,
} from '../calc/index.js';
import type { Protocol } from '../ir/types.js';
import { CliError, printJson } from './output.js';
import { allocateOptions, loadModelOrFail, parseNodeCount, parsePort } from './manifests.js';
import { parseFamily } from './options.js';
import { errorMessage } from '../util/errors.js';
import { addressWithPort } from '../util/ip.js';

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

/** How traffic from outside enters: the node port or load-balancer address, and the traffic policy. */
function externalLines(x: ExternalEntryExplanation, served: boolean): string[] {
  const where =
    x.kind === 'nodeport'
      ? `node port ${x.port} on ${x.node ?? '?'} (${x.address})`
      : `load-balancer address ${addressWithPort(x.address, x.port)}`;
  const policy =
    x.externalTrafficPolicy === 'Local'
      ? "only the entry node's own backends, client address kept"
      : 'any backend, source masqueraded to the entry node';
  // Without a service behind the port there is no policy to tell.
  const lines = [
    served ? `  ${where}, externalTrafficPolicy ${x.externalTrafficPolicy}: ${policy}` : `  ${where}`,
  ];
  if (x.kind === 'lb') lines.push(`    enters at ${x.entryNodes.join(', ') || 'no node'}`);
  if (x.unservedNodes.length) lines.push(`    no eligible backend on ${x.unservedNodes.join(', ')}`);
  return lines;
}

/** The service, then each backend pod it translates to with the policy that decides there. */
function serviceLines(x: Explanation, s: ServiceExplanation): string[] {
  const port = `${s.port}/${s.protocol}${s.portName ? ` (${s.portName})` : ''}`;
  const target = s.targetPort !== undefined ? `, target port ${s.targetPort}` : '';
  const count = `${s.backends.length} backend${s.backends.length === 1 ? '' : 's'}`;
  const lines = s.external ? externalLines(s.external, s.problem !== 'port-not-defined') : [];
  if (s.name)
    lines.push(
      s.problem === 'port-not-defined'
        ? `  service ${s.name} ${s.address}: ports ${s.ports.join(', ') || 'none'}; none is ${s.port}/${s.protocol}`
        : `  service ${s.name} ${addressWithPort(s.address, port)}${target}: ${count}`,
    );
  if (s.affinityTimeoutSeconds !== undefined)
    lines.push(
      `    ClientIP affinity: a client keeps its backend for ${s.affinityTimeoutSeconds} s after its last connection`,
    );
  if (s.internalTrafficPolicy === 'Local')
    lines.push("    internalTrafficPolicy Local: only backends on the client's node");
  for (const p of s.skipped) lines.push(`    not a backend: ${p.pod}: ${p.reason}`);
  const from = x.from.endpoint
    ? `${x.from.endpoint} (${x.from.address})`
    : `${x.from.address} (outside the cluster)`;
  if (s.backends.length) lines.push(`  from ${from}`);
  for (const b of s.backends) {
    const via =
      b.entryNode === undefined
        ? ''
        : ` via ${b.entryNode}, source ${b.source}${b.sourceKind === 'client' ? ' (client kept)' : ' (SNAT to the node)'}${
            b.otherSource ? otherSourceText(b.otherSource, b.allowed) : ''
          }`;
    lines.push(
      `  → ${b.endpoint} ${addressWithPort(b.address, b.targetPort)}${b.node ? ` on ${b.node}` : ''}${via}: ${b.allowed ? 'ALLOWED' : 'DENIED'}`,
    );
    for (const side of [b.egress, b.ingress]) if (side) lines.push(...sideLines(side).map((l) => `  ${l}`));
    if (!b.egress && b.decidedAt !== 'same-pod')
      lines.push('      egress: source is outside the cluster, no egress policy applies');
    if (b.prefilter) lines.push(`      prefilter ${b.prefilter} drops ${x.from.address}`);
  }
  return lines;
}

/** An explanation for humans: the verdict, then each side (and each backend of a service). */
export function explanationText(x: Explanation): string {
  const lines = [
    x.summary.replace(/: (allowed|denied|refused|dropped)/, (_, v: string) => `: ${v.toUpperCase()}`),
  ];
  if (x.service) return [...lines, ...serviceLines(x, x.service)].join('\n') + '\n';
  const fmt = (e: typeof x.from): string =>
    e.endpoint ? `${e.endpoint} (${e.address} on ${e.node})` : `${e.address} (outside the cluster)`;
  lines.push(`  from ${fmt(x.from)} to ${fmt(x.to)}`);
  if (x.egress) lines.push(...sideLines(x.egress));
  else if (x.decidedAt !== 'same-pod')
    lines.push('  egress: source is outside the cluster, no egress policy applies');
  if (x.prefilter && !x.prefilterReply)
    lines.push(`  prefilter ${x.prefilter} drops ${x.from.address} at ${x.to.node}`);
  if (x.ingress) lines.push(...sideLines(x.ingress));
  else if (x.decidedAt === 'allowed')
    lines.push('  ingress: destination is outside the cluster, no ingress policy applies');
  return lines.join('\n') + '\n';
}

export function register(program: Command): void {
  program
    .command('explain')
    .description(
      'why a new connection is allowed or denied: which policies select each end and which rule decided',
    )
    .argument('<paths...>', 'manifest files or directories')
    .requiredOption(
      '--from <pod|address|outside>',
      'source: namespace/pod, an address, or a client outside the cluster (outside:NAME, outside:ADDRESS)',
    )
    .requiredOption(
      '--to <pod|address|service>',
      'destination: namespace/pod, an address (ADDRESS:PORT), a service svc/NAMESPACE/NAME:PORT or its cluster IP; from outside a node port nodeport/NODE:PORT or a load-balancer address lb/IP:PORT',
    )
    .option('--port <port>', 'destination port (a service port for a service)', parsePort)
    .option('--protocol <protocol>', 'TCP, UDP, SCTP or ICMP', 'TCP')
    .option('--nodes <n>', 'nodes to spread unplaced pods over (matters for prefilters)', parseNodeCount)
    .option(
      '--family <4|6>',
      'pods stand for their IPv4 (default) or IPv6 address (pods get one as in the lab)',
      parseFamily,
    )
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
          family?: 4 | 6;
        },
      ) => {
        const protocol = opts.protocol.toUpperCase();
        if (!['TCP', 'UDP', 'SCTP', 'ICMP'].includes(protocol))
          throw new CliError(`--protocol must be TCP, UDP, SCTP or ICMP, not '${opts.protocol}'`, 2);
        if (protocol !== 'ICMP' && opts.port === undefined && !destinationHasPort(opts.to))
          throw new CliError(
            `--port is needed for ${protocol} (or a destination with one: svc/NS/NAME:PORT)`,
            2,
          );
        const model = loadModelOrFail(paths);
        // An IPv6 address at either end asks about the pods' IPv6 addresses, so they need one.
        const family = opts.family ?? impliedFamily(opts.from, opts.to);
        const ir = buildIR(
          model,
          allocate(model, {}, allocateOptions({ ...opts, ...(family ? { family } : {}) })),
        );
        let result;
        try {
          result = explain(model, ir, {
            from: opts.from,
            to: opts.to,
            protocol: protocol as Protocol,
            ...(opts.port !== undefined ? { port: opts.port } : {}),
            ...(opts.family !== undefined ? { family: opts.family } : {}),
          });
        } catch (e) {
          throw new CliError(errorMessage(e), 2, { cause: e });
        }
        // A measured failure that policy allows: what the kernel said when it dropped the packets.
        const kernelDrops = opts.lab
          ? await (await import('../lab/index.js')).labDropHints(opts.lab, opts.from, opts.to)
          : [];
        const json = { ...result, ...(opts.family !== undefined ? { family: opts.family } : {}) };
        if (opts.json) return printJson(opts.lab ? { ...json, kernelDrops } : json);
        let text = explanationText(result);
        if (opts.lab) {
          const { hintLine } = await import('../lab/index.js');
          text += kernelDrops.length
            ? `  kernel drops seen in lab ${opts.lab}:\n${kernelDrops.map((h) => `    ${hintLine(h)}\n`).join('')}`
            : `  kernel drops seen in lab ${opts.lab}: none\n`;
        }
        process.stdout.write(text);
      },
    );
}
