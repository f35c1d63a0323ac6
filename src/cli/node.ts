import type { Command } from 'commander';
import { agentRequest } from '../agent/client.js';
import type { AgentStatus } from '../agent/agent.js';
import type { Explanation } from '../calc/explain.js';
import type { FlowStats } from '../observe/flows.js';
import { agentStatusCells, policyCell } from './agent-status.js';
import { explanationText } from './explain.js';
import { resolveAgents, type AgentTargetOptions } from './agent-target.js';
import { parsePort } from './manifests.js';
import { formatTable, printJson } from './output.js';
import { errorMessage } from '../util/errors.js';

interface Flags extends AgentTargetOptions {
  json?: boolean;
}

function targetOptions(cmd: Command): Command {
  return cmd
    .option('--lab <name>', "the lab's agents (default: $SWITCHYARD_LAB, else the only agents running)")
    .option('--node <name>', 'only this node')
    .option('--socket <path>', "an agent's API socket")
    .option('--json', 'machine-readable');
}

async function ask<T>(flags: Flags, path: string): Promise<{ node: string; answer: T }[]> {
  return Promise.all(
    resolveAgents(flags).map(async (a) => ({ node: a.node, answer: await agentRequest<T>(a.socket, path) })),
  );
}

type Status = AgentStatus & { flows: FlowStats };

/** Every agent's answer, and the agents that gave none (dead, hung): one dead agent hides no other. */
async function askEach<T>(
  flags: Flags,
  path: string,
): Promise<{ answers: { node: string; answer: T }[]; silent: { node: string; error: string }[] }> {
  const agents = resolveAgents(flags);
  const settled = await Promise.allSettled(agents.map((a) => agentRequest<T>(a.socket, path)));
  const answers: { node: string; answer: T }[] = [];
  const silent: { node: string; error: string }[] = [];
  settled.forEach((r, i) => {
    const node = agents[i]?.node ?? '-';
    if (r.status === 'fulfilled') answers.push({ node, answer: r.value });
    else silent.push({ node, error: errorMessage(r.reason) });
  });
  if (silent.length > 0) process.exitCode = 1;
  return { answers, silent };
}

async function status(flags: Flags): Promise<void> {
  const { answers: all, silent } = await askEach<Status>(flags, '/v1/status');
  if (flags.json) return printJson([...all.map((a) => a.answer), ...silent]);
  const dead = silent.map(({ node, error }) => [
    node,
    ...Array<string>(12).fill('-'),
    `unreachable: ${error}`,
  ]);
  const rows = all.map(({ answer: s }) => [
    ...agentStatusCells(s),
    s.restarts ?? 0,
    policyCell(s),
    s.errors,
    s.flows.flows,
    s.flows.rateLimited + Object.values(s.flows.lost).reduce((x, y) => x + y, 0),
    s.flows.evicted,
    s.metricsUrl ?? '-',
    s.lastError ? `${s.lastError.stage}: ${s.lastError.message.split('\n')[0] ?? ''}` : 'ok',
  ]);
  process.stdout.write(
    formatTable(
      [
        'NODE',
        'BACKEND',
        'PID',
        'REVISION',
        'LAST APPLY',
        'REPAIRS',
        'RESTARTS',
        'POLICY',
        'ERRORS',
        'FLOWS',
        'DROPPED',
        'EVICTED',
        'METRICS',
        'STATE',
      ],
      [...rows, ...dead],
    ) + '\n',
  );
  // Where flow counts went missing, so DROPPED is never a bare number.
  for (const { answer: s } of all) {
    const where = [
      ...Object.entries(s.flows.lost),
      ...(s.flows.rateLimited > 0 ? [['agent rate limit', s.flows.rateLimited] as const] : []),
    ].filter(([, n]) => n > 0);
    if (where.length > 0)
      process.stdout.write(
        `${s.node}: flow counts dropped: ${where.map(([w, n]) => `${n} ${w}`).join(', ')}\n`,
      );
  }
  // A table over the bound is walked: say which, so a slow endpoint is not a mystery.
  for (const { answer: s } of all)
    for (const o of s.policy?.overflows ?? [])
      process.stdout.write(
        `${s.node}: ${o.endpoint} ${o.direction} walks its rules (its table needs ${o.entries} entries, ` +
          `more than ${o.maxEntries})\n`,
      );
}

interface EndpointView {
  id: string;
  addresses: string[];
  labels: Record<string, string>;
  interface: string;
  ingress: { networkPolicies: string[]; globalPolicies: string[]; default: string };
  egress: { networkPolicies: string[]; globalPolicies: string[]; default: string };
}

async function endpoints(flags: Flags): Promise<void> {
  const all = await ask<EndpointView[]>(flags, '/v1/endpoints');
  if (flags.json) return printJson(all.flatMap((a) => a.answer.map((e) => ({ node: a.node, ...e }))));
  const side = (s: EndpointView['ingress']): string =>
    [...s.globalPolicies, ...s.networkPolicies].join(', ') || `none (${s.default})`;
  const rows = all.flatMap(({ node, answer }) =>
    answer.map((e) => [
      node,
      e.id,
      e.addresses.join(','),
      Object.entries(e.labels)
        .map(([k, v]) => `${k}=${v}`)
        .join(','),
      side(e.ingress),
      side(e.egress),
    ]),
  );
  process.stdout.write(
    formatTable(['NODE', 'POD', 'ADDRESS', 'LABELS', 'INGRESS POLICIES', 'EGRESS POLICIES'], rows) + '\n',
  );
}

interface PolicyView {
  policy: string;
  directions: string[];
  selects: string[];
  rules: string[];
}

async function policies(flags: Flags): Promise<void> {
  const all = await ask<PolicyView[]>(flags, '/v1/policies');
  if (flags.json) return printJson(all.flatMap((a) => a.answer.map((p) => ({ node: a.node, ...p }))));
  const rows = all.flatMap(({ node, answer }) =>
    answer.map((p) => [node, p.policy, p.directions.join(','), p.selects.join(', '), p.rules.length]),
  );
  process.stdout.write(formatTable(['NODE', 'POLICY', 'DIRECTIONS', 'SELECTS', 'RULES'], rows) + '\n');
}

async function explainVia(
  flags: Flags & { from: string; to: string; port?: number; protocol: string },
): Promise<void> {
  const q = new URLSearchParams({ from: flags.from, to: flags.to, protocol: flags.protocol });
  if (flags.port) q.set('port', String(flags.port));
  const agent = resolveAgents(flags)[0];
  if (!agent) return;
  const answer = await agentRequest<Explanation>(agent.socket, `/v1/explain?${q.toString()}`);
  if (flags.json) return printJson(answer);
  // A service: each backend pod and the policy that decides there.
  if (answer.service) return void process.stdout.write(explanationText(answer));
  process.stdout.write(`${answer.summary}\n`);
  for (const s of [answer.egress, answer.ingress]) if (s) process.stdout.write(`  ${s.text}\n`);
}

export function register(program: Command): void {
  const cmd = program.command('node').description("ask a node's agent: status, endpoints, policies, explain");
  targetOptions(
    cmd.command('status').description('what each agent has in force, repairs, errors, flow counters'),
  ).action((f: Flags) => status(f));
  targetOptions(
    cmd.command('endpoints').description("the node's pods, labels and the policies selecting them"),
  ).action((f: Flags) => endpoints(f));
  targetOptions(cmd.command('policies').description('policies that select a pod on the node')).action(
    (f: Flags) => policies(f),
  );
  targetOptions(
    cmd
      .command('explain')
      .description('which rule decides a connection, as the agent sees the desired state')
      .requiredOption('--from <pod|address>', 'source')
      .requiredOption(
        '--to <pod|address|service>',
        'destination (a service: svc/NAMESPACE/NAME:PORT or its cluster IP)',
      )
      .option('--port <port>', 'destination port', parsePort)
      .option('--protocol <protocol>', 'TCP, UDP, SCTP or ICMP', 'TCP'),
  ).action((f: Flags & { from: string; to: string; port?: number; protocol: string }) => explainVia(f));
}
