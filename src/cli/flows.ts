import type { Command } from 'commander';
import { Option } from 'commander';
import { agentRequest, agentStream } from '../agent/client.js';
import type { Flow, FlowProcess, FlowStats } from '../observe/flows.js';
import { resolveAgents, type AgentTargetOptions } from './agent-target.js';
import { integerIn } from './options.js';
import { CliError, formatTable, printJson } from './output.js';

interface FlowFlags extends AgentTargetOptions {
  follow?: boolean;
  json?: boolean;
  pod?: string;
  verdict?: 'allow' | 'deny' | 'log' | 'dropped';
  policy?: string;
  limit: number;
  for?: number;
}

function query(flags: FlowFlags, extra: Record<string, string> = {}): string {
  const q = new URLSearchParams(extra);
  if (flags.pod) q.set('pod', flags.pod);
  if (flags.verdict) q.set('verdict', flags.verdict);
  if (flags.policy) q.set('policy', flags.policy);
  return `/v1/flows?${q.toString()}`;
}

function endpointText(f: Flow): string {
  return f.endpoint ? `${f.endpoint} ${f.direction}` : f.direction;
}

function oneProcess(p: FlowProcess | undefined): string {
  return p ? `${p.comm}[${p.pid}]${p.pod ? ` ${p.pod}` : ''}` : '';
}

/** "curl[12] shop/web → postgres[34] shop/db": the process at each end that we saw. */
function processText(f: Flow): string {
  const source = oneProcess(f.sourceProcess ?? f.process);
  if (!f.destinationProcess) return source;
  return `${source || '?'} → ${oneProcess(f.destinationProcess)}`;
}

/** Policy verdicts: the deciding rule; kernel drops: the kernel's reason and the function that freed them. */
function decidedBy(f: Flow): string {
  if (f.verdict === 'dropped') return `kernel ${f.dropReason ?? f.rule} in ${f.dropFunction ?? '?'}`;
  return f.policy ? `${f.policy} (${f.rule})` : f.rule;
}

/** An aggregate (sport 0) stands for every source port: only the address is shown. */
function sourceText(f: Flow): string {
  return f.sport === 0 ? f.src : `${f.src}:${f.sport}`;
}

export function flowRow(f: Flow): string[] {
  return [
    f.lastSeen.slice(11, 23),
    f.firstSeen.slice(11, 23),
    f.node,
    f.protocol,
    sourceText(f),
    `${f.dst}:${f.dport}`,
    endpointText(f),
    f.verdict.toUpperCase(),
    decidedBy(f),
    String(f.connections),
    String(f.packets),
    String(f.bytes),
    processText(f),
  ];
}

export const FLOW_HEADERS = [
  'TIME',
  'FIRST SEEN',
  'NODE',
  'PROTO',
  'SOURCE',
  'DESTINATION',
  'ENDPOINT',
  'VERDICT',
  'DECIDED BY',
  'CONNS',
  'PKTS',
  'BYTES',
  'PROCESS',
];

const parseLimit = integerIn('--limit', 1, 100_000);

function parseSeconds(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0 || n > 86_400)
    throw new CliError(`--for must be 0-86400 seconds, not '${v}'`, 2);
  return n;
}

async function listFlows(flags: FlowFlags): Promise<void> {
  const agents = resolveAgents(flags);
  const answers = await Promise.all(
    agents.map((a) =>
      agentRequest<{ flows: Flow[]; stats: FlowStats }>(a.socket, `${query(flags)}&limit=${flags.limit}`),
    ),
  );
  const flows = answers
    .flatMap((a) => a.flows)
    .sort((a, b) => (a.lastSeen < b.lastSeen ? 1 : -1))
    .slice(0, flags.limit);
  if (flags.json) {
    printJson(flows);
    return;
  }
  process.stdout.write(formatTable(FLOW_HEADERS, flows.map(flowRow)) + '\n');
  const dropped = answers.reduce(
    (n, a) => n + a.stats.rateLimited + Object.values(a.stats.lost).reduce((x, y) => x + y, 0),
    0,
  );
  process.stdout.write(
    `\n${flows.length} flows from ${agents.length} agent${agents.length === 1 ? '' : 's'}` +
      (dropped > 0 ? `; ${dropped} events dropped under load (see 'switchyard node status')` : '') +
      '\n',
  );
}

async function followFlows(flags: FlowFlags): Promise<void> {
  const agents = resolveAgents(flags);
  const abort = new AbortController();
  const stop = (): void => abort.abort();
  process.once('SIGINT', stop);
  const timer = flags.for ? setTimeout(stop, flags.for * 1000) : undefined;
  if (!flags.json) process.stdout.write(FLOW_HEADERS.join('  ') + '\n');
  try {
    await Promise.all(
      agents.map((a) =>
        agentStream(
          a.socket,
          query(flags, { follow: '1' }),
          (data) => {
            const f = data as Flow;
            process.stdout.write(flags.json ? `${JSON.stringify(f)}\n` : `${flowRow(f).join('  ')}\n`);
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
      'recent flows from the agents, aggregated in the kernel: addresses, protocol and port, verdict, the rule that decided, connections, packets, bytes, process',
    )
    .option('--lab <name>', "the lab's agents (default: $SWITCHYARD_LAB, else the only agents running)")
    .option('--node <name>', 'only this node')
    .option('--socket <path>', "an agent's API socket")
    .option('--pod <ns/name>', 'only flows of this pod')
    .addOption(
      new Option('--verdict <verdict>', 'only this verdict').choices(['allow', 'deny', 'log', 'dropped']),
    )
    .option('--policy <text>', 'only flows whose policy or rule id contains this')
    .option('--limit <n>', 'most recent flows to show', parseLimit, 50)
    .option(
      '-f, --follow',
      'stream flow records as the agents drain them, once per interval (Ctrl-C to stop)',
    )
    .option('--for <seconds>', 'with --follow: stop after this long', parseSeconds)
    .option('--json', 'JSON (one object per line with --follow)')
    .action((flags: FlowFlags) => (flags.follow ? followFlows(flags) : listFlows(flags)));
}
