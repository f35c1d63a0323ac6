/**
 * A client that reuses a 5-tuple after a policy change is judged by the policy in force, on every
 * backend (found by the chaos test on eBPF). Netfilter's conntrack calls a connection ESTABLISHED
 * only once the other side answered, and a SYN is never an answer; the eBPF conntrack must agree:
 *
 * - reverse: a connection the server's ingress hook never saw (its link detached for a moment)
 *   leaves only the server's egress entry for the SYN-ACK. A later SYN on the same 5-tuple must not
 *   pass as a "reply" to it once the policy denies the pair.
 * - forward: a SYN the client's egress policy allowed but the server's ingress dropped leaves an
 *   unanswered entry on the client's side. A later SYN on the same 5-tuple must be judged by the
 *   new egress policy, which denies it.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, expect, it } from 'vitest';
import { labAgents } from '../../src/lab/agents.js';
import { readState } from '../../src/lab/state.js';
import { availableBackends, loadBackend } from '../../src/dataplane/registry.js';
import { describeKernel } from '../support/kernel.js';
import { namespace, networkPolicy, pod, type Manifest } from '../support/manifests.js';
import { cli, cliOk, leftovers, manifestFile, NOTHING_LEFT } from './lab-harness.js';

const run = promisify(execFile);
const LAB = 'cfct';
const CLIENT_IP = '198.18.9.2';
const SERVER_IP = '198.18.9.10';
const PORT = 80;

const allowClientIn = networkPolicy('app', 'allow-c', {
  podSelector: {},
  ingress: [
    {
      from: [
        { namespaceSelector: { matchLabels: { ns: 'cli' } }, podSelector: { matchLabels: { role: 'c' } } },
      ],
      ports: [{ port: PORT, protocol: 'TCP' }],
    },
  ],
});
const allowClientOut = networkPolicy('cli', 'allow-out', {
  podSelector: {},
  policyTypes: ['Egress'],
  egress: [
    { to: [{ namespaceSelector: { matchLabels: { ns: 'app' } } }], ports: [{ port: PORT, protocol: 'TCP' }] },
  ],
});
const denyClientOut = networkPolicy('cli', 'deny-out', { podSelector: {}, policyTypes: ['Egress'] });

/** Client on node-1, server on node-2 under default-deny ingress, plus `policies`. */
function world(policies: readonly Manifest[]): string {
  return manifestFile([
    namespace('app', { ns: 'app' }),
    namespace('cli', { ns: 'cli' }),
    pod('cli', 'c', { labels: { role: 'c' }, ip: CLIENT_IP, node: 'node-1' }),
    pod('app', 's', {
      labels: { app: 's' },
      ip: SERVER_IP,
      node: 'node-2',
      ports: [{ name: 'http', containerPort: PORT, protocol: 'TCP' }],
    }),
    networkPolicy('app', 'default-deny', { podSelector: {}, policyTypes: ['Ingress'] }),
    ...policies,
  ]);
}

/** Connects from the client pod with source port `localPort`; on success closes with a RST (no FIN). */
const CONNECT = `
const net = require('node:net');
const [host, port, localPort] = process.argv.slice(1).map((a, i) => (i === 0 ? a : Number(a)));
const s = net.connect({ host, port, localPort });
const t = setTimeout(() => { process.stdout.write('timeout'); process.exit(0); }, 400);
s.on('connect', () => { clearTimeout(t); process.stdout.write('connected'); s.resetAndDestroy(); setTimeout(() => process.exit(0), 50); });
s.on('error', (e) => { clearTimeout(t); process.stdout.write(e.code ?? e.message); process.exit(0); });
`;

function podOf(id: string): { netns: string; node: string } {
  const p = readState(LAB)?.topology?.pods.find((x) => x.id === id);
  if (!p) throw new Error(`no pod ${id} in lab ${LAB}`);
  return p;
}

async function connect(localPort: number): Promise<string> {
  const { stdout } = await run('ip', [
    'netns',
    'exec',
    podOf('cli/c').netns,
    process.execPath,
    '-e',
    CONNECT,
    SERVER_IP,
    String(PORT),
    String(localPort),
  ]);
  return stdout.trim();
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describeKernel('conntrack: a reused 5-tuple is judged by the policy in force', () => {
  afterAll(async () => {
    await cli(['lab', 'down', '--name', LAB]);
    expect(leftovers(LAB)).toEqual(NOTHING_LEFT);
  });

  for (const backend of availableBackends()) {
    it(`${backend}: a SYN is no reply, and an unanswered connection is no established one`, async () => {
      await cli(['lab', 'down', '--name', LAB]);
      await cliOk(['lab', 'up', world([allowClientIn]), '--name', LAB, '--backend', backend]);

      // Reverse: the server's ingress policy gone while the connection is made (its agent
      // stopped, so nothing repairs it meanwhile); the client closes with a RST.
      const server = podOf('app/s');
      const agent = labAgents(LAB).find((a) => a.node === server.node);
      if (!agent) throw new Error(`no agent on ${server.node}`);
      const state = readState(LAB);
      const endpoint = state?.ir.endpoints.find((e) => e.id === 'app/s');
      const node = state?.topology?.nodes.find((n) => n.name === server.node);
      if (!endpoint || !node) throw new Error('no endpoint app/s or no node');
      process.kill(agent.pid, 'SIGSTOP');
      try {
        await (
          await loadBackend(backend)
        ).tamper({ scope: LAB, node: node.name, netns: node.netns }, endpoint);
        expect(await connect(41000)).toBe('connected');
      } finally {
        process.kill(agent.pid, 'SIGCONT');
      }
      await sleep(1500); // the agent repairs the tamper
      await cliOk(['lab', 'apply', world([]), '--name', LAB]);
      expect(await connect(41002), 'a fresh 5-tuple').toBe('timeout');
      expect(await connect(41000), 'the 5-tuple of the connection made during the tamper').toBe('timeout');

      // Forward: the client's egress allows, the server's ingress drops; then the other way round.
      await cliOk(['lab', 'apply', world([allowClientOut]), '--name', LAB]);
      expect(await connect(41001)).toBe('timeout');
      await cliOk(['lab', 'apply', world([denyClientOut, allowClientIn]), '--name', LAB]);
      expect(await connect(41003), 'a fresh 5-tuple').toBe('timeout');
      expect(await connect(41001), 'the 5-tuple whose SYN the old egress policy allowed').toBe('timeout');
    });
  }
});
