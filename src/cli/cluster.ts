/**
 * `switchyard cluster …`: the lab in cluster mode. A real etcd holds the desired state, one
 * agent per node watches it; `switchyard apply/get --lab NAME` write and read it. The fault
 * commands (cut/heal a node, kill/restart etcd) are what the fault tests and the demo use.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import type { EtcdMember } from '../lab/etcd.js';
import { ETCD_MEMBER_COUNTS, type EtcdMemberCount } from '../lab/names.js';
import type { ClusterStatus } from '../lab/cluster.js';
import { cleanupLine, podTable, progressBar } from './lab.js';
import { parseNodeCount } from './manifests.js';
import { CliError, formatTable, printJson } from './output.js';
import { BACKEND_NAMES, type BackendName } from '../dataplane/backend.js';
import { DEFAULT_POLICY_MODE, type PolicyMode } from '../ir/decision-table.js';
import { policyModeOption } from './options.js';
import { addLabOptions, chooseLab, LAB_ENV, type LabFlags } from './lab-choice.js';
import { readState } from '../lab/state.js';
import { DEFAULT_CLUSTER } from '../lab/names.js';

const BACKENDS = BACKEND_NAMES;
const DEFAULT_CLUSTER_BACKEND: ClusterBackend = 'ebpf';

function memberPids(members: readonly EtcdMember[]): string {
  return members.length === 1 ? `pid ${members[0]?.pid}` : `members ${members.map((m) => m.pid).join(', ')}`;
}

function parseEtcdMembers(value: string): EtcdMemberCount {
  const n = Number(value);
  const counts: readonly number[] = ETCD_MEMBER_COUNTS;
  if (!counts.includes(n))
    throw new InvalidArgumentError(`--etcd-members: ${ETCD_MEMBER_COUNTS.join(' or ')}, not '${value}'`);
  return n as EtcdMemberCount;
}

const cluster = (): Promise<typeof import('../lab/cluster.js')> => import('../lab/cluster.js');

/** The cluster a command acts on: --lab, $SWITCHYARD_LAB, else the only cluster lab. */
function clusterOptions(cmd: Command): Command {
  return addLabOptions(cmd, 'the cluster (lab) to act on', `$${LAB_ENV}, else the only cluster`);
}

const chosenCluster = (flags: LabFlags): string => chooseLab(flags, { clusters: true });

/** What a cluster up keeps when --backend is not given: the running cluster's backend. */
function keptBackend(name: string): ClusterBackend | undefined {
  const b = readState(name)?.backend;
  return b === undefined || b === 'none' ? undefined : b;
}

type ClusterBackend = BackendName;

interface ClusterUpOptions extends LabFlags {
  nodes?: number;
  etcdMembers?: EtcdMemberCount;
  backend?: ClusterBackend;
  policyMode?: PolicyMode;
  json?: boolean;
}

async function clusterUpAction(paths: string[], opts: ClusterUpOptions): Promise<void> {
  const name = chooseLab(opts, { clusters: true, create: DEFAULT_CLUSTER });
  const backend = opts.backend ?? keptBackend(name) ?? DEFAULT_CLUSTER_BACKEND;
  const c = await cluster();
  const progress = opts.json ? undefined : progressBar();
  let r;
  try {
    r = await c.clusterUp({
      name,
      files: paths,
      backend,
      ...(opts.nodes ? { nodeCount: opts.nodes } : {}),
      ...(opts.etcdMembers ? { etcdMembers: opts.etcdMembers } : {}),
      ...(opts.policyMode ? { policyMode: opts.policyMode } : {}),
      ...(progress ? { progress } : {}),
    });
  } finally {
    progress?.done();
  }
  const t = r.lab.state.topology;
  if (opts.json) {
    printJson({
      name,
      etcd: r.etcd.clientUrl,
      etcdMembers: r.etcd.members.length,
      revision: r.write.revision,
      backend,
      policyMode: r.lab.state.policyMode ?? DEFAULT_POLICY_MODE,
      nodes: t?.nodes.map((n) => n.name) ?? [],
      pods: t?.pods.length ?? 0,
      durationMs: r.lab.durationMs,
    });
    return;
  }
  process.stdout.write(
    `cluster ${name}: etcd ${r.etcd.clientUrl} (${memberPids(r.etcd.members)}, TLS client certificates, ` +
      `revision ${r.write.revision}), ` +
      `${t?.pods.length ?? 0} pods on ${t?.nodes.length ?? 0} nodes, ${backend} agents watching etcd ` +
      `(${r.lab.durationMs} ms)\n\n${podTable(t?.pods ?? [])}\n\n` +
      `change it:  switchyard apply FILES --lab ${name}\nread it:    switchyard get pods --lab ${name}\n`,
  );
}

function registerClusterUp(cmd: Command): void {
  const up = cmd
    .command('up')
    .description(
      'start etcd, write the manifests to it (they become the whole state), build the lab, one agent per node',
    )
    .argument('<paths...>', 'YAML files or directories')
    .option('--nodes <n>', 'nodes to spread pods over (default: kept, else 2)', parseNodeCount)
    .option(
      '--etcd-members <n>',
      `etcd members, ${ETCD_MEMBER_COUNTS.join(' or ')} (default: kept, else 1; changing it needs 'cluster down')`,
      parseEtcdMembers,
    )
    .addOption(
      new Option(
        '--backend <backend>',
        `policy backend of the agents (default: the cluster's current one, else ${DEFAULT_CLUSTER_BACKEND})`,
      ).choices(BACKENDS),
    )
    .addOption(policyModeOption(`the cluster's current mode, else ${DEFAULT_POLICY_MODE}`))
    .option('--json', 'machine-readable result');
  addLabOptions(
    up,
    'the cluster (lab) to create or converge',
    `$${LAB_ENV}, else the only cluster, else ${DEFAULT_CLUSTER}`,
  );
  up.action(clusterUpAction);
}

function registerClusterDown(cmd: Command): void {
  clusterOptions(cmd.command('down'))
    .description('stop the agents and etcd, remove the lab and its data')
    .option('--json', 'machine-readable: the cleanup report')
    .action(async (opts: LabFlags & { json?: boolean }) => {
      const { labDown } = await import('../lab/index.js');
      const r = await labDown(chosenCluster(opts));
      if (r.problems.length > 0)
        throw new CliError(r.problems.join('\n'), 1, { code: 'cleanup-incomplete', details: { lab: r } });
      if (opts.json) printJson(r);
      else process.stdout.write(cleanupLine(r) + '\n');
    });
}

/** Revisions as numbers, like etcd's own (an agent reports its revision as a string). */
export function statusJson(s: ClusterStatus): unknown {
  return {
    ...s,
    nodes: s.nodes.map((n) => ({
      ...n,
      ...(n.revision !== undefined ? { revision: Number(n.revision) } : {}),
    })),
  };
}

function printClusterStatus(s: ClusterStatus): void {
  const members = s.etcd.members.map(
    (m) => `${m.name} ${m.running ? `pid ${m.pid}` : 'NOT RUNNING'}${m.leader ? ' (leader)' : ''}`,
  );
  process.stdout.write(
    `cluster ${s.name}: etcd ${s.etcd.url}: ${members.join(', ')}` +
      `${s.etcd.revision !== undefined ? `, revision ${s.etcd.revision}` : ''}\n\n`,
  );
  process.stdout.write(
    formatTable(
      ['NODE', 'AGENT', 'REVISION', 'ETCD', 'CUT OFF', 'LAST ERROR'],
      s.nodes.map((n) => [
        n.node,
        n.agentPid ?? 'not running',
        n.revision ?? '-',
        n.connected === undefined ? '-' : n.connected ? 'connected' : 'disconnected',
        n.cutOff ? 'yes' : 'no',
        n.lastError ?? '',
      ]),
    ) + '\n',
  );
}

function registerClusterStatus(cmd: Command): void {
  clusterOptions(cmd.command('status'))
    .description("etcd, and each node's agent: pid, revision in force, connection to etcd, cut off or not")
    .option('--json', 'machine-readable result (revisions are numbers)')
    .action(async (opts: LabFlags & { json?: boolean }) => {
      const s = await (await cluster()).clusterStatus(chosenCluster(opts));
      if (opts.json) printJson(statusJson(s));
      else printClusterStatus(s);
    });
}

function registerClusterCut(cmd: Command): void {
  clusterOptions(cmd.command('cut'))
    .description("cut one node's agent off from etcd (its packets to etcd are dropped in the kernel)")
    .argument('<node>', 'node name')
    .option('--json', 'machine-readable: {lab, node, cutOff}')
    .action(async (node: string, opts: LabFlags & { json?: boolean }) => {
      const name = chosenCluster(opts);
      await (await cluster()).partitionNode(name, node);
      if (opts.json) return printJson({ lab: name, node, cutOff: true });
      process.stdout.write(`node ${node}: cut off from etcd (heal with 'switchyard cluster heal ${node}')\n`);
    });
}

function registerClusterHeal(cmd: Command): void {
  clusterOptions(cmd.command('heal'))
    .description('reconnect a node cut off from etcd')
    .argument('<node>', 'node name')
    .option('--json', 'machine-readable: {lab, node, healed} (healed false: it was not cut off)')
    .action(async (node: string, opts: LabFlags & { json?: boolean }) => {
      const name = chosenCluster(opts);
      const was = await (await cluster()).healNode(name, node);
      if (opts.json) return printJson({ lab: name, node, healed: was });
      process.stdout.write(`node ${node}: ${was ? 'healed' : 'was not cut off'}\n`);
    });
}

function registerClusterEtcd(cmd: Command): void {
  const etcd = cmd.command('etcd').description("stop or start the cluster's etcd (fault drills)");
  clusterOptions(etcd.command('kill'))
    .description('SIGKILL etcd (every member, or the leader), as a crash would')
    .option('--leader', 'only the Raft leader (a 3-member etcd elects another and goes on)')
    .option('--json', 'machine-readable: {lab, killed: [member…]}')
    .action(async (opts: LabFlags & { leader?: boolean; json?: boolean }) => {
      const name = chosenCluster(opts);
      const killed = await (await cluster()).killClusterEtcd(name, opts.leader ? { leader: true } : {});
      if (opts.json) return printJson({ lab: name, killed });
      process.stdout.write(
        `etcd ${killed.map((m) => m.name).join(', ')} killed; agents keep enforcing what they have\n`,
      );
    });
  clusterOptions(etcd.command('start'))
    .description('start etcd again (same address and data)')
    .option('--json', 'machine-readable: {lab, etcd, members: [member…]}')
    .action(async (opts: LabFlags & { json?: boolean }) => {
      const name = chosenCluster(opts);
      const info = await (await cluster()).restartClusterEtcd(name);
      if (opts.json) return printJson({ lab: name, etcd: info.clientUrl, members: info.members });
      process.stdout.write(`etcd running: ${info.clientUrl} (${memberPids(info.members)})\n`);
    });
}

export function register(program: Command): void {
  const cmd = program.command('cluster').description('lab nodes sharing desired state through a real etcd');
  registerClusterUp(cmd);
  registerClusterDown(cmd);
  registerClusterStatus(cmd);
  registerClusterCut(cmd);
  registerClusterHeal(cmd);
  registerClusterEtcd(cmd);
}
