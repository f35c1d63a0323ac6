import type { Command } from 'commander';
import { Option } from 'commander';
import { agentRequest, agentStream } from '../agent/client.js';
import {
  FlowFilterError,
  flowMatcher,
  isFiltering,
  parseFlowQuery,
  type FlowFilterFlags,
} from '../observe/flow-filter.js';
import type { Flow, FlowStats } from '../observe/flows.js';
import { resolveAgents, type AgentEndpoint, type AgentTargetOptions } from './agent-target.js';
import { FLOW_HEADERS, flowRow, FollowPrinter, hubbleFlow } from './flow-format.js';
import { integerIn } from './options.js';
import { CliError, formatTable, printJson } from './output.js';

export { FLOW_HEADERS, flowRow } from './flow-format.js';

type OutputFormat = 'table' | 'json' | 'jsonpb';

interface FlowFlags extends AgentTargetOptions, FlowFilterFlags {
  follow?: boolean;
  json?: boolean;
  output?: OutputFormat;
  limit: number;
  last?: number;
  for?: number;
}

/** What the agents' tables hold at most (src/observe/flows.ts): asked for all when filtering here. */
const AGENT_CAPACITY = 10_000;

const parseLimit = integerIn('--limit', 1, 100_000);
const parseLast = integerIn('--last', 1, 100_000);

function parseSeconds(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0 || n > 86_400)
    throw new CliError(`--for must be 0-86400 seconds, not '${v}'`, 2);
  return n;
}

/** Repeatable options collect their values (filters OR within one flag, as Hubble's). */
const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];

function outputFormat(flags: FlowFlags): OutputFormat {
  if (flags.json && flags.output && flags.output !== 'json')
    throw new CliError(`--json and -o ${flags.output} ask for different output: pick one`, 2);
  return flags.json ? 'json' : (flags.output ?? 'table');
}

/** Filters run here, over records whose both ends the agents resolved to pods. */
function matcher(flags: FlowFlags): { filtering: boolean; matches: (f: Flow) => boolean } {
  try {
    const q = parseFlowQuery(flags, Date.now());
    return { filtering: isFiltering(q), matches: flowMatcher(q) };
  } catch (e) {
    if (e instanceof FlowFilterError) throw new CliError(e.message, 2, { cause: e });
    throw e;
  }
}

async function recentFlows(
  agents: readonly AgentEndpoint[],
  flags: FlowFlags,
  limit: number,
): Promise<{ flows: Flow[]; dropped: number }> {
  const { filtering, matches } = matcher(flags);
  const answers = await Promise.all(
    agents.map((a) =>
      agentRequest<{ flows: Flow[]; stats: FlowStats }>(
        a.socket,
        `/v1/flows?limit=${filtering ? AGENT_CAPACITY : limit}`,
      ),
    ),
  );
  const flows = answers
    .flatMap((a) => a.flows)
    .filter(matches)
    .sort((a, b) => (a.lastSeen < b.lastSeen ? 1 : -1))
    .slice(0, limit);
  const dropped = answers.reduce(
    (n, a) => n + a.stats.rateLimited + Object.values(a.stats.lost).reduce((x, y) => x + y, 0),
    0,
  );
  return { flows, dropped };
}

async function listFlows(flags: FlowFlags): Promise<void> {
  const format = outputFormat(flags);
  const agents = resolveAgents(flags);
  const { flows, dropped } = await recentFlows(agents, flags, flags.last ?? flags.limit);
  if (format === 'json') return printJson(flows);
  if (format === 'jsonpb') {
    // Oldest first, one object per line, as `hubble observe -o jsonpb`.
    for (const f of [...flows].reverse()) process.stdout.write(`${JSON.stringify(hubbleFlow(f))}\n`);
    return;
  }
  process.stdout.write(formatTable(FLOW_HEADERS, flows.map(flowRow)) + '\n');
  process.stdout.write(
    `\n${flows.length} flows from ${agents.length} agent${agents.length === 1 ? '' : 's'}` +
      (dropped > 0 ? `; ${dropped} events dropped under load (see 'switchyard node status')` : '') +
      '\n',
  );
}

async function followFlows(flags: FlowFlags): Promise<void> {
  const format = outputFormat(flags);
  const agents = resolveAgents(flags);
  const { matches } = matcher(flags);
  const printer = new FollowPrinter(agents.map((a) => a.node));
  const show = (f: Flow): void => {
    const update = printer.update(f);
    if (!update) return;
    if (format === 'table') process.stdout.write(`${printer.row(update)}\n`);
    else process.stdout.write(`${JSON.stringify(format === 'jsonpb' ? hubbleFlow(f) : f)}\n`);
  };
  const abort = new AbortController();
  const stop = (): void => abort.abort();
  process.once('SIGINT', stop);
  const timer = flags.for ? setTimeout(stop, flags.for * 1000) : undefined;
  if (format === 'table') process.stdout.write(`${printer.header()}\n`);
  try {
    // --last N: the N most recent first (oldest on top), then what changes.
    if (flags.last) for (const f of (await recentFlows(agents, flags, flags.last)).flows.reverse()) show(f);
    await Promise.all(
      agents.map((a) =>
        agentStream(
          a.socket,
          '/v1/flows?follow=1',
          (data) => {
            const f = data as Flow;
            if (matches(f)) show(f);
          },
          abort.signal,
        ),
      ),
    );
  } finally {
    clearTimeout(timer);
    process.off('SIGINT', stop);
  }
}

export function register(program: Command): void {
  program
    .command('flows')
    .description(
      'recent flows from the agents, aggregated in the kernel: pods or addresses at both ends, protocol and port, verdict, the rule that decided, connections, packets, bytes, process; filtered as hubble observe does',
    )
    .option('--lab <name>', "the lab's agents (default: $SWITCHYARD_LAB, else the only agents running)")
    .option('--node <name>', 'only flows recorded by this node')
    .option('--socket <path>', "an agent's API socket")
    .option(
      '--pod <[ns/]name>',
      'either end is this pod (or a pod whose name starts so); repeatable',
      collect,
    )
    .option('--from-pod <[ns/]name>', 'the source is this pod; repeatable', collect)
    .option('--to-pod <[ns/]name>', 'the destination is this pod; repeatable', collect)
    .option(
      '-n, --namespace <ns>',
      'either end is in this namespace; also the namespace of pod names given without one (default: default)',
      collect,
    )
    .option(
      '-l, --label <selector>',
      'either end has these labels (app=web,tier!=db, app in (a,b)); repeatable',
      collect,
    )
    .option('--from-label <selector>', 'the source has these labels; repeatable', collect)
    .option('--to-label <selector>', 'the destination has these labels; repeatable', collect)
    .option('--ip <address|cidr>', 'either end has this address (or one in this CIDR); repeatable', collect)
    .option('--from-ip <address|cidr>', 'the source address; repeatable', collect)
    .option('--to-ip <address|cidr>', 'the destination address; repeatable', collect)
    .option('--protocol <name>', 'tcp, udp, sctp or icmp; repeatable', collect)
    .option('--port <port>', "either end's port; repeatable", collect)
    .option('--from-port <port>', 'the source port (aggregates have none); repeatable', collect)
    .option('--to-port <port>', 'the destination port; repeatable', collect)
    .option(
      '--verdict <verdict>',
      "allow (FORWARDED), deny (policy), kernel (dropped by the kernel for its own reason), dropped (either: Hubble's DROPPED) or log (AUDIT), any case; repeatable",
      collect,
    )
    .option('--policy <text>', 'the policy or rule id contains this; repeatable', collect)
    .option('--since <when>', 'last seen since a duration ago (30s, 5m, 1h) or an RFC 3339 time')
    .option('--last <n>', 'the N most recent matching flows (with --follow: shown first)', parseLast)
    .option('--limit <n>', 'most recent flows to show (the same as --last without --follow)', parseLimit, 50)
    .option(
      '-f, --follow',
      'stream flows as the agents drain them: a line when a flow appears or its counts change (+N), aligned (Ctrl-C to stop)',
    )
    .option('--for <seconds>', 'with --follow: stop after this long', parseSeconds)
    .addOption(
      new Option(
        '-o, --output <format>',
        'table, json (as --json) or jsonpb (Hubble flows, one per line)',
      ).choices(['table', 'json', 'jsonpb']),
    )
    .option('--json', 'JSON (one object per line with --follow)')
    .action((flags: FlowFlags) => (flags.follow ? followFlows(flags) : listFlows(flags)));
}
