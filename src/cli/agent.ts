import { Command, Option } from 'commander';
import { BACKEND_NAMES, FLOW_INTERVAL_MS, type BackendName } from '../dataplane/backend.js';
import { isEtcdSource } from '../agent/desired.js';
import { AGENT_MARK, defaultStateDir } from '../agent/paths.js';
import { parseNodeCount } from './manifests.js';
import { integerIn, policyModeOption } from './options.js';
import { DEFAULT_POLICY_MODE, type PolicyMode } from '../ir/decision-table.js';
import { CliError } from './output.js';
import { readTokenFile, untilStopSignal } from './serving.js';
import { errorMessage } from '../util/errors.js';
import type { EtcdTlsFiles } from '../datastore/etcd.js';

interface AgentFlags {
  node: string;
  backend: BackendName;
  netns: string;
  scope: string;
  source?: string;
  stateDir?: string;
  nodes?: number;
  policyMode?: PolicyMode;
  listen?: string;
  tokenFile?: string;
  metrics?: string;
  flows: boolean;
  processTracing: boolean;
  flowInterval?: number;
  reconcileMs?: number;
  cgroups?: string;
  etcdCacert?: string;
  etcdCert?: string;
  etcdKey?: string;
  uninstall?: boolean;
}

/** The client certificate for an etcd source: all three files or none. */
function etcdTls(flags: AgentFlags): EtcdTlsFiles | undefined {
  const { etcdCacert: ca, etcdCert: cert, etcdKey: key } = flags;
  if (ca === undefined && cert === undefined && key === undefined) return undefined;
  if (ca === undefined || cert === undefined || key === undefined)
    throw new CliError('--etcd-cacert, --etcd-cert and --etcd-key go together', 2);
  return { ca, cert, key };
}

const parseInterval = integerIn('--reconcile-ms', 50, 60_000);
const parseFlowInterval = integerIn('--flow-interval', 100, 60_000);

function readToken(file: string | undefined): string {
  if (!file) throw new CliError('--listen needs --token-file: the TCP API is never open without a token', 2);
  return readTokenFile(file);
}

async function run(flags: AgentFlags): Promise<void> {
  if (!flags.netns.startsWith('sy-'))
    throw new CliError(`--netns must name a project namespace (sy-…), not '${flags.netns}'`, 2);
  const { loopbackAddress } = await import('../agent/api.js');
  const { runAgent, uninstallAgent } = await import('../agent/run.js');
  const stateDir = flags.stateDir ?? defaultStateDir(flags.scope, flags.node);
  const base = { node: flags.node, backend: flags.backend, netns: flags.netns, scope: flags.scope, stateDir };
  if (flags.uninstall) {
    await uninstallAgent(base);
    process.stdout.write(`removed the ${flags.backend} dataplane of node ${flags.node} and ${stateDir}\n`);
    return;
  }
  if (!flags.source)
    throw new CliError(
      '--source is required: a directory of manifests (watched), or etcd:http://HOST:PORT',
      2,
    );
  if (isEtcdSource(flags.source)) {
    const { parseEtcdUrl } = await import('../datastore/etcd.js');
    try {
      parseEtcdUrl(flags.source);
    } catch (e) {
      throw new CliError(`--source: ${errorMessage(e)}`, 2, { cause: e });
    }
  }
  const tls = etcdTls(flags);
  let agentLoopback: ReturnType<typeof loopbackAddress> | undefined;
  let metricsLoopback: ReturnType<typeof loopbackAddress> | undefined;
  try {
    if (flags.listen) agentLoopback = loopbackAddress(flags.listen, '--listen');
    if (flags.metrics) metricsLoopback = loopbackAddress(flags.metrics, '--metrics', { anyPort: true });
  } catch (e) {
    throw new CliError(errorMessage(e), 2, { cause: e });
  }
  const running = await runAgent({
    ...base,
    source: flags.source,
    flows: flags.flows,
    processTracing: flags.processTracing,
    ...(flags.flowInterval ? { flowIntervalMs: flags.flowInterval } : {}),
    ...(flags.cgroups ? { cgroupsFile: flags.cgroups } : {}),
    ...(tls ? { etcdTls: tls } : {}),
    ...(flags.nodes ? { nodeCount: flags.nodes } : {}),
    policyMode: flags.policyMode ?? DEFAULT_POLICY_MODE,
    ...(flags.reconcileMs ? { reconcileMs: flags.reconcileMs } : {}),
    ...(agentLoopback ? { listen: { ...agentLoopback, token: readToken(flags.tokenFile) } } : {}),
    ...(metricsLoopback ? { metrics: metricsLoopback } : {}),
  });
  // The dataplane stays in force: stopping an agent never drops traffic.
  await untilStopSignal(() => running.stop());
}

export function register(program: Command): void {
  program
    .command('agent')
    .description(
      "keep one node's dataplane equal to the desired state in a directory: adopt, apply changes, repair drift, serve flows, metrics and an API",
    )
    .requiredOption(
      '--node <name>',
      'the node this agent is for (as in the IR: spec.nodeName or node-1, node-2, …)',
    )
    .addOption(
      new Option('--backend <backend>', 'dataplane backend').choices(BACKEND_NAMES).makeOptionMandatory(),
    )
    .requiredOption('--netns <name>', "the node's network namespace (sy-…)")
    .option('--scope <name>', 'pin and cgroup scope (a lab name for lab agents)', 'agent')
    .option(
      '--source <dir|etcd:URL>',
      'desired state: a directory of manifests (or a compiled desired.json), or etcd:http(s)://HOST:PORT[,…] (members); watched',
    )
    .option('--etcd-cacert <file>', "the CA of an https etcd's members (with --etcd-cert and --etcd-key)")
    .option('--etcd-cert <file>', 'the client certificate an etcd with --client-cert-auth wants')
    .option('--etcd-key <file>', "the client certificate's key")
    .option(
      '--state-dir <dir>',
      'where the agent keeps its record and API socket (default /run/switchyard/agents/<scope>/<node>)',
    )
    .option('--nodes <n>', 'nodes to spread pods without spec.nodeName over', parseNodeCount)
    .addOption(policyModeOption(`${DEFAULT_POLICY_MODE}; a compiled desired.json brings its own`))
    .option('--listen <address>', 'also serve the API on 127.0.0.1:PORT (needs --token-file)')
    .option('--token-file <file>', 'bearer token for --listen')
    .option(
      '--metrics <address>',
      'serve Prometheus metrics on 127.0.0.1:PORT (0: any free port; the URL is in the state directory and `node status`)',
    )
    .option(
      '--no-flows',
      'no flow records (the dataplane reports no verdicts; for measuring what flows cost)',
    )
    .option(
      '--no-process-tracing',
      'flow records without process context (no tracing programs; for measuring what tracing costs)',
    )
    .option(
      '--flow-interval <ms>',
      `how often flow counters aggregated in the kernel are drained into records (default ${FLOW_INTERVAL_MS})`,
      parseFlowInterval,
    )
    .option(
      '--reconcile-ms <ms>',
      'how often the dataplane is polled for drift (default: 250 eBPF, 1000 with nf_tables change events, 500 otherwise)',
      parseInterval,
    )
    .option(
      '--cgroups <file>',
      'JSON {pod: cgroup directory}, for process context on flows when the source has none (etcd)',
    )
    .option('--uninstall', "remove the node's dataplane and the agent's record, then exit")
    .addOption(new Option(AGENT_MARK, 'marks lab-started agents').hideHelp())
    .action((flags: AgentFlags) => run(flags));
}
