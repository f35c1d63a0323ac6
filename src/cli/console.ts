import type { Command } from 'commander';
import { resolveAgents } from './agent-target.js';
import { CliError } from './output.js';
import { readTokenFile, untilStopSignal } from './serving.js';
import { errorMessage } from '../util/errors.js';

interface ConsoleFlags {
  lab?: string;
  socket?: string;
  listen: string;
  tokenFile?: string;
  bench?: string;
}

async function run(flags: ConsoleFlags): Promise<void> {
  const { loopbackAddress } = await import('../agent/api.js');
  let address;
  try {
    address = loopbackAddress(flags.listen, '--listen');
  } catch (e) {
    throw new CliError(errorMessage(e), 2, { cause: e });
  }
  const first = resolveAgents(flags);
  const { stateLabs } = await import('../lab/state.js');
  // Without --lab, the lab whose agents these are (the reach page and the advisor need it).
  const lab =
    flags.lab ??
    (flags.socket
      ? undefined
      : stateLabs().find((l) => first.some((a) => a.socket.includes(`/labs/${l}/agents/`))));
  const { generateToken } = await import('../util/http/auth.js');
  const { startConsole } = await import('../console/server.js');
  const { scenarioNames } = await import('../bench/registry.js');
  const token = flags.tokenFile ? readTokenFile(flags.tokenFile) : generateToken();
  const server = await startConsole({
    benchScenarios: scenarioNames(),
    host: address.host,
    port: address.port,
    token,
    agents: () => resolveAgents({ ...flags, ...(lab ? { lab } : {}) }),
    ...(lab ? { lab } : {}),
    ...(flags.bench ? { benchFile: flags.bench } : {}),
  });
  const link = flags.tokenFile ? server.url : `${server.url}?token=${token}`;
  process.stdout.write(
    `switchyard console${lab ? ` for lab ${lab}` : ''} (${first.length} agent${first.length === 1 ? '' : 's'}): ${link}\n` +
      (flags.tokenFile ? `token: the one in ${flags.tokenFile} (append ?token=… once)\n` : '') +
      'Ctrl-C to stop\n',
  );
  await untilStopSignal(() => server.close());
}

export function register(program: Command): void {
  program
    .command('console')
    .description(
      "web console on 127.0.0.1: endpoints and policies, live flows with explanations, the lab's reach matrix, bench charts",
    )
    .option('--lab <name>', "the lab's agents (default: $SWITCHYARD_LAB, else the only agents running)")
    .option('--socket <path>', "one agent's API socket instead")
    .option('--listen <address>', 'loopback address and port to serve on', '127.0.0.1:9470')
    .option('--token-file <file>', 'bearer token (default: a new one, printed in the link)')
    .option(
      '--bench <file>',
      'bench results to chart (`switchyard bench --json FILE`; default docs/benchmarks/results.json)',
    )
    .action((flags: ConsoleFlags) => run(flags));
}
