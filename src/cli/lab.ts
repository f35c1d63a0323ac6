import cliProgress from 'cli-progress';
import { Command, Option } from 'commander';
import type { CleanupReport, LabDetail, LabPod, LabSummary, Progress } from '../lab/index.js';
import { registerLabConntrack } from './lab-conntrack.js';
import { registerLabCounters } from './lab-counters.js';
import { registerLabProbe } from './lab-probe.js';
import { loadModelOrFail, parseNodeCount, parsePort } from './manifests.js';
import { parseFamily, parseTimeoutMs, policyModeOption } from './options.js';
import { CliError, formatTable, printJson } from './output.js';
import { formatReachView } from './reach-format.js';
import { compareReach } from '../calc/index.js';
import { confirmDestructive } from './confirm.js';
import { addLabOptions, chooseLab, LAB_ENV, labNotUp, namedLab, type LabFlags } from './lab-choice.js';
import { DEFAULT_LAB } from '../lab/names.js';
import { BACKEND_NAMES, type BackendName } from '../dataplane/backend.js';
import { DEFAULT_POLICY_MODE, type PolicyMode } from '../ir/decision-table.js';

// src/lab pulls in koffi; load it only when a lab command actually runs.
const lab = (): Promise<typeof import('../lab/index.js')> => import('../lab/index.js');

type BackendOption = 'none' | BackendName;
const BACKENDS: readonly BackendOption[] = ['none', ...BACKEND_NAMES];

function parseLabProtocol(v: string): 'TCP' | 'UDP' {
  const p = v.toUpperCase();
  if (p !== 'TCP' && p !== 'UDP') throw new CliError(`--protocol must be TCP or UDP, not '${v}'`, 2);
  return p;
}

function collect(v: string, prev: string[] = []): string[] {
  return [...prev, ...v.split(',').filter(Boolean)];
}

/** A progress bar on stderr when it is a terminal; silence otherwise (CI logs, pipes). */
export function progressBar(): Progress | undefined {
  if (process.stderr.isTTY !== true) return undefined;
  const bar = new cliProgress.SingleBar(
    {
      format: 'lab {label} {bar} {value}/{total}',
      hideCursor: true,
      clearOnComplete: true,
      stream: process.stderr,
    },
    cliProgress.Presets.shades_classic,
  );
  let active = false;
  let value = 0;
  return {
    phase(label, total) {
      if (active) bar.stop();
      value = 0;
      bar.start(total, 0, { label: label.padEnd(16) });
      active = true;
    },
    tick() {
      if (active) bar.update(++value);
    },
    done() {
      if (active) bar.stop();
      active = false;
    },
  };
}

/** The lab's pods with both addresses (`-`: a lab from before pods had an IPv6 one). */
export function podTable(pods: readonly LabPod[]): string {
  return formatTable(
    ['POD', 'NODE', 'ADDRESS', 'IPV6 ADDRESS', 'NETNS', 'PORTS'],
    pods.map((p) => [
      p.id,
      p.node,
      p.address,
      p.addressV6 ?? '-',
      p.netns,
      p.ports.map((x) => `${x.port}/${x.protocol}`).join(' '),
    ]),
  );
}

async function upOrApply(
  mode: 'up' | 'apply',
  files: string[],
  opts: LabFlags & {
    backend?: BackendOption;
    nodes?: number;
    agents?: boolean;
    policyMode?: PolicyMode;
    outside?: string[];
    json?: boolean;
  },
): Promise<void> {
  const name = chooseLab(opts, mode === 'up' ? { create: DEFAULT_LAB } : {});
  const model = loadModelOrFail(files);
  const l = await lab();
  const progress = opts.json ? undefined : progressBar();
  let result;
  try {
    result = await l.converge({
      name,
      model,
      files,
      mode,
      ...(opts.backend ? { backend: opts.backend } : {}),
      ...(opts.nodes ? { nodeCount: opts.nodes } : {}),
      ...(opts.policyMode ? { policyMode: opts.policyMode } : {}),
      ...(opts.agents === false ? { agents: false } : {}),
      ...(opts.outside ? { outside: opts.outside } : {}),
      ...(progress ? { progress } : {}),
    });
  } finally {
    progress?.done();
  }
  const t = result.state.topology;
  const pods = t?.pods ?? [];
  const changes = [
    result.rebuilt ? 'rebuilt an interrupted lab' : '',
    result.recovered ? 'recovered an interrupted run in place' : '',
    result.added.length ? `+${result.added.length} pods` : '',
    result.removed.length ? `-${result.removed.length} pods` : '',
    result.nodesAdded.length ? `+${result.nodesAdded.length} nodes` : '',
    result.nodesRemoved.length ? `-${result.nodesRemoved.length} nodes` : '',
    result.backendChange ? `backend ${result.backendChange.from} → ${result.backendChange.to}` : '',
  ].filter(Boolean);
  if (opts.json)
    return printJson({
      lab: name,
      backend: result.state.backend,
      policyMode: result.state.policyMode ?? DEFAULT_POLICY_MODE,
      revision: result.state.revision,
      probeServerPid: result.state.probe?.pid,
      agents: result.state.agents === true && result.state.backend !== 'none',
      nodes: t?.nodes.map((n) => n.name) ?? [],
      pods,
      outside: t?.outside ?? [],
      changes: {
        rebuilt: result.rebuilt,
        recovered: result.recovered,
        added: result.added,
        removed: result.removed,
        nodesAdded: result.nodesAdded,
        nodesRemoved: result.nodesRemoved,
        ...(result.backendChange ? { backend: result.backendChange } : {}),
      },
      closed: result.closed,
      durationMs: result.durationMs,
    });
  process.stdout.write(
    `lab ${name}: ${pods.length} pods on ${t?.nodes.length ?? 0} nodes, backend ${result.state.backend} ` +
      `(${result.state.policyMode ?? DEFAULT_POLICY_MODE} mode), ` +
      `probe server pid ${result.state.probe?.pid ?? '-'}${result.state.agents && result.state.backend !== 'none' ? `, ${t?.nodes.length ?? 0} agents` : ''} (${changes.join(', ') || 'no changes'}; ${result.durationMs} ms)\n\n`,
  );
  process.stdout.write(podTable(pods) + '\n');
  if (result.closed.length > 0) process.stdout.write(`\n${closedLine(result.closed)}\n`);
}

function closedLine(ids: readonly string[]): string {
  return `closed pods (policy not in force on their node yet; the next apply that succeeds opens them): ${ids.join(', ')}`;
}

export function cleanupLine(r: CleanupReport): string {
  const parts = [
    `${r.netns.length} namespaces`,
    r.processes.length ? `processes ${r.processes.join(',')}` : '',
    r.cgroups ? 'cgroups' : '',
    r.pins ? 'pins' : '',
    r.stateDir ? 'state' : '',
  ].filter(Boolean);
  const nothing = r.netns.length === 0 && !r.processes.length && !r.cgroups && !r.pins && !r.stateDir;
  return `lab ${r.lab}: ${nothing ? 'nothing to remove' : `removed ${parts.join(', ')}`}`;
}

function printDetail(d: LabDetail): void {
  process.stdout.write(
    `lab ${d.name}: ${d.status}${d.revision !== undefined ? ` (revision ${d.revision})` : ''}, backend ${d.backend ?? '-'}, probe server ` +
      `${d.probeServer ? `pid ${d.probeServer.pid} ${d.probeServer.running ? 'running' : 'NOT running'}` : 'none'}\n`,
  );
  if (d.closed.length > 0) process.stdout.write(`${closedLine(d.closed)}\n`);
  if (d.missingNetns.length > 0) {
    process.stdout.write(`missing namespaces (run 'lab up' to rebuild): ${d.missingNetns.join(', ')}\n`);
  }
  process.stdout.write(
    '\n' +
      formatTable(
        ['NODE', 'NETNS', 'FABRIC ADDRESS', 'PODS', 'AGENT', 'RESTARTS', 'REVISION', 'STATE'],
        d.nodeList.map((n) => [
          n.name,
          n.netns,
          n.address,
          n.pods,
          n.agent ? `pid ${n.agent}` : '-',
          n.restarts ?? '-',
          n.revision ?? '-',
          n.error ? `${n.state ?? ''}: ${n.error}` : (n.state ?? '-'),
        ]),
      ) +
      '\n\n' +
      podTable(d.podList) +
      '\n',
  );
  if (d.outsideList.length > 0) process.stdout.write('\n' + outsideTable(d) + '\n');
}

/** The outside: its clients, the nodes' external addresses and where load-balancer addresses go. */
function outsideTable(d: LabDetail): string {
  const nodeByAddress = new Map(
    d.nodeList.flatMap((n) => (n.externalAddress ? [[n.externalAddress, n.name]] : [])),
  );
  const rows: (string | number)[][] = [
    ...d.outsideList.map((o) => [`outside:${o.name}`, 'client', o.address, o.netns]),
    ...d.nodeList.flatMap((n) => (n.externalAddress ? [[n.name, 'node', n.externalAddress, n.netns]] : [])),
    ...d.loadBalancers.map((lb) => [
      'load balancer',
      `via ${lb.via.map((a) => nodeByAddress.get(a) ?? a).join(' ')}`,
      lb.address,
      '-',
    ]),
  ];
  return formatTable(['OUTSIDE', 'ROLE', 'ADDRESS', 'NETNS'], rows);
}

function registerLabUp(cmd: Command): void {
  const up = cmd
    .command('up')
    .description('create (or converge) a lab from manifests and start its probe servers')
    .argument('<files...>', 'manifest files or directories')
    .addOption(
      new Option('--backend <backend>', "policy backend (default: the lab's current one, else none)").choices(
        BACKENDS,
      ),
    )
    .option('--nodes <n>', 'nodes to spread pods without spec.nodeName over (default 2)', parseNodeCount)
    .option('--no-agents', 'apply the backend once from the CLI instead of running one agent per node')
    .addOption(policyModeOption(`the lab's current mode, else ${DEFAULT_POLICY_MODE}`))
    .option(
      '--outside <names>',
      "client namespaces outside the cluster besides 'client' (comma-separated; default: the lab's current ones)",
      collect,
    )
    .option('--json', 'machine-readable result');
  addLabOptions(up, 'the lab to create or converge', `$${LAB_ENV}, else the only lab, else ${DEFAULT_LAB}`);
  up.action(
    (
      files: string[],
      opts: LabFlags & {
        backend?: BackendOption;
        nodes?: number;
        agents: boolean;
        policyMode?: PolicyMode;
        outside?: string[];
        json?: boolean;
      },
    ) => upOrApply('up', files, opts),
  );
}

function registerLabApply(cmd: Command): void {
  const apply = cmd
    .command('apply')
    .description("change a running lab's desired state, touching only the difference")
    .argument('<files...>', 'manifest files or directories')
    .addOption(policyModeOption("the lab's current mode"))
    .option('--json', 'machine-readable result');
  addLabOptions(apply).action(
    (files: string[], opts: LabFlags & { policyMode?: PolicyMode; json?: boolean }) =>
      upOrApply('apply', files, opts),
  );
}

interface ReachCliOptions extends LabFlags {
  port: number;
  protocol: 'TCP' | 'UDP';
  from?: string[];
  timeout?: number;
  full?: boolean;
  json?: boolean;
  family: 4 | 6;
}

async function reachAction(opts: ReachCliOptions): Promise<void> {
  const name = chooseLab(opts);
  const progress = opts.json ? undefined : progressBar();
  const r = await (
    await lab()
  ).measureReach(name, {
    port: opts.port,
    protocol: opts.protocol,
    family: opts.family,
    ...(opts.from ? { from: opts.from } : {}),
    ...(opts.timeout ? { timeoutMs: opts.timeout } : {}),
    ...(progress ? { progress } : {}),
  });
  const comparison = compareReach(r.matrix, r.predicted);
  const { mismatches, ...counts } = comparison;
  if (opts.json)
    return printJson({
      ...r.matrix,
      family: opts.family,
      summary: { ...counts, mismatches: mismatches.length, durationMs: r.durationMs },
      mismatches,
      // The kernel's reasons for pairs policy allows that failed, when the agents saw any.
      ...(r.kernelDrops.length ? { kernelDrops: r.kernelDrops } : {}),
    });
  process.stdout.write(
    `${opts.protocol}/${opts.port}${opts.family === 6 ? ' over IPv6' : ''} measured in lab ${name}, compared with the prediction\n`,
  );
  process.stdout.write(
    formatReachView({
      matrix: r.matrix,
      comparison,
      compared: true,
      durationMs: r.durationMs,
      full: opts.full === true,
    }) + '\n',
  );
  if (r.kernelDrops.length === 0) return;
  const { hintLine } = await lab();
  process.stdout.write(
    `\npolicy allows these, the kernel dropped them:\n${r.kernelDrops.map((h) => `  ${hintLine(h)}`).join('\n')}\n`,
  );
}

function registerLabReach(cmd: Command): void {
  addLabOptions(cmd.command('reach'))
    .description(
      'measure the pod×pod matrix with real connections from inside each pod, and compare it with the prediction',
    )
    .option('--port <port>', 'destination port', parsePort, 80)
    .option('--protocol <protocol>', 'TCP or UDP', parseLabProtocol, 'TCP' as const)
    .option('--family <4|6>', "between the pods' IPv4 (default) or IPv6 addresses", parseFamily, 4 as const)
    .option('--from <pod>', 'source pod namespace/name (repeatable or comma-separated; default all)', collect)
    .option('--timeout <ms>', 'per-connection timeout', parseTimeoutMs)
    .option('--full', 'the pod×pod grid even above 20 pods (default: a summary per namespace)')
    .option(
      '--json',
      'machine-readable matrix (same shape as `switchyard reach --json`), with summary and mismatches',
    )
    .action(reachAction);
}

function registerLabExec(cmd: Command): void {
  addLabOptions(cmd.command('exec'))
    .description(
      "run a command inside a pod's network namespace and cgroup, or an outside client's namespace",
    )
    .usage('[--lab <name>] <namespace/pod | outside:NAME> -- <command...>')
    .argument('<pod>', 'namespace/name, or outside:NAME for a client outside the cluster')
    .argument('<command...>', 'command and arguments (after --)')
    .action(async (pod: string, command: string[], opts: LabFlags) => {
      const name = chooseLab(opts);
      process.exitCode = await (await lab()).labExec(name, pod, command);
    });
}

function printLabList(labs: readonly LabSummary[]): void {
  if (labs.length === 0) return void process.stdout.write('no labs\n');
  process.stdout.write(
    formatTable(
      ['LAB', 'STATUS', 'BACKEND', 'NODES', 'PODS', 'PROBE SERVER', 'MISSING NETNS'],
      labs.map((s) => [
        s.name,
        s.status,
        s.backend ?? '-',
        s.nodes,
        s.pods,
        s.probeServer ? `${s.probeServer.pid} ${s.probeServer.running ? 'running' : 'DEAD'}` : '-',
        s.missingNetns.length,
      ]),
    ) + '\n',
  );
}

function registerLabStatus(cmd: Command): void {
  cmd
    .command('status')
    .description('labs on this machine; with --lab, one lab in detail')
    .addOption(new Option('--lab <name>', 'show this lab in detail'))
    .addOption(new Option('--name <lab>', 'deprecated: use --lab').hideHelp())
    .option('--json', 'machine-readable')
    .action(async (opts: LabFlags & { json?: boolean }) => {
      const l = await lab();
      // A listing: every lab unless one is named by flag ($SWITCHYARD_LAB does not narrow it).
      if (opts.lab !== undefined || opts.name !== undefined) {
        const name = chooseLab(opts);
        const d = await l.labDetail(name);
        if (d.status === 'unreadable') throw labNotUp(name);
        return opts.json ? printJson(d) : printDetail(d);
      }
      const labs = await l.allLabStatuses();
      if (opts.json) return printJson({ labs });
      printLabList(labs);
    });
}

/**
 * A named lab, or the only one; also one a crashed run left without state (found by its names in
 * the kernel). A name nothing carries is a typo: say which labs there are instead of "nothing".
 */
async function labToRemove(opts: LabFlags): Promise<string> {
  const l = await lab();
  const named = namedLab(opts);
  if (!named) return chooseLab(opts);
  const onMachine = l.labsOnMachine();
  if (!onMachine.includes(named.name)) throw labNotUp(named.name, named.from, onMachine);
  return named.name;
}

async function downAll(opts: { yes?: boolean; lab?: string; name?: string }): Promise<CleanupReport[]> {
  if (opts.lab !== undefined || opts.name !== undefined)
    throw new CliError('give --all or --lab, not both', 2, { code: 'conflicting-options' });
  const l = await lab();
  const labs = l.labsOnMachine();
  if (labs.length === 0) return [];
  await confirmDestructive(
    `remove all ${labs.length} labs on this machine (${labs.join(', ')}), also other users'`,
    opts,
  );
  return l.labDownAll();
}

function registerLabDown(cmd: Command): void {
  addLabOptions(cmd.command('down'), 'the lab to remove')
    .description('remove a lab and everything it made (also what a crashed run left)')
    .option('--all', 'remove every lab on this machine, found by state files and by name (asks first)')
    .option('-y, --yes', 'with --all: do not ask (needed without a terminal)')
    .option('--json', 'machine-readable: {labs: [cleanup report…]}')
    .action(async (opts: LabFlags & { all?: boolean; yes?: boolean; json?: boolean }) => {
      const l = await lab();
      const reports = opts.all ? await downAll(opts) : [await l.labDown(await labToRemove(opts))];
      if (!opts.json && reports.length === 0) process.stdout.write('no labs\n');
      for (const r of opts.json ? [] : reports) {
        process.stdout.write(cleanupLine(r) + '\n');
        for (const n of r.notes) process.stderr.write(`  note: ${n}\n`);
      }
      const problems = reports.flatMap((r) => r.problems.map((p) => `lab ${r.lab}: ${p}`));
      if (problems.length > 0)
        throw new CliError(problems.join('\n'), 1, {
          code: 'cleanup-incomplete',
          details: { labs: reports },
        });
      if (opts.json) printJson({ labs: reports });
    });
}

export function register(program: Command): void {
  const cmd = program
    .command('lab')
    .description('nodes and pods as network namespaces on this machine, with probe servers and real traffic');
  registerLabUp(cmd);
  registerLabApply(cmd);
  registerLabReach(cmd);
  registerLabExec(cmd);
  registerLabStatus(cmd);
  registerLabDown(cmd);
  registerLabCounters(cmd);
  registerLabConntrack(cmd);
  registerLabProbe(cmd);
}
