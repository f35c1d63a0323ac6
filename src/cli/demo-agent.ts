/**
 * The demo's agent steps: one agent per lab node keeps the dataplane in sync, repairs what is
 * changed behind its back, survives SIGKILL without dropping traffic, and reports flows with the
 * rule that decided and the process that connected.
 */
import type { AgentStatus } from '../agent/agent.js';
import { agentRequest } from '../agent/client.js';
import { apiSocket } from '../agent/paths.js';
import { FLOW_INTERVAL_MS, type BackendName } from '../dataplane/backend.js';
import { loadBackend } from '../dataplane/registry.js';
import { agentStateDir, labAgents, measureReach } from '../lab/index.js';
import { readState } from '../lab/state.js';
import type { Flow } from '../observe/flows.js';
import type { DemoStep } from './demo-step.js';
import { FLOW_HEADERS, flowRow } from './flows.js';
import { formatTable } from './output.js';
import { agentStatusCells } from './agent-status.js';

const VICTIM = 'shop/db';

function statusOf(lab: string, node: string): Promise<AgentStatus> {
  return agentRequest<AgentStatus>(apiSocket(agentStateDir(lab, node)), '/v1/status');
}

function nodeOfPod(lab: string, pod: string): { name: string; netns: string } {
  const s = readState(lab);
  const node = s?.topology?.pods.find((p) => p.id === pod)?.node;
  const n = s?.topology?.nodes.find((x) => x.name === node);
  if (!n) throw new Error(`pod ${pod} is not in lab ${lab}`);
  return n;
}

/** Something an operator (or a rogue script) might do: remove the policy from one pod. */
async function tamper(lab: string, backendName: BackendName): Promise<string> {
  const state = readState(lab);
  const node = nodeOfPod(lab, VICTIM);
  const endpoint = state?.ir.endpoints.find((e) => e.id === VICTIM);
  if (!endpoint) throw new Error(`pod ${VICTIM} is not in lab ${lab}`);
  const backend = await loadBackend(backendName);
  return backend.tamper({ scope: lab, node: node.name, netns: node.netns }, endpoint);
}

async function until<T>(fn: () => Promise<T | undefined>, timeoutMs: number): Promise<T | undefined> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 20));
  }
  return undefined;
}

async function agentTable(lab: string): Promise<string> {
  const rows = [];
  for (const a of labAgents(lab).sort((x, y) => (x.node < y.node ? -1 : 1))) {
    const s = await statusOf(lab, a.node);
    rows.push(agentStatusCells(s));
  }
  return formatTable(['node', 'backend', 'pid', 'revision', 'last apply', 'repairs'], rows);
}

async function tamperAndWatchRepair(lab: string, b: BackendName | undefined): Promise<string> {
  if (!b) return 'no backend';
  const node = nodeOfPod(lab, VICTIM);
  const before = await statusOf(lab, node.name);
  const started = Date.now();
  const what = await tamper(lab, b);
  const after = await until(async () => {
    const s = await statusOf(lab, node.name);
    return s.repairs > before.repairs ? s : undefined;
  }, 10_000);
  const denied = await measureReach(lab, {
    port: 5432,
    protocol: 'TCP',
    from: ['outside/client'],
    timeoutMs: 500,
  });
  return [
    `tampered: ${what}`,
    after
      ? `repaired by the agent of ${node.name} ${Date.parse(after.lastApply?.at ?? '') - started} ms later (repairs: ${after.repairs})`
      : 'NOT repaired within 10 s',
    `outside/client → ${VICTIM}:5432 ${denied.matrix.results['outside/client']?.[VICTIM] ? 'REACHED (policy lost!)' : 'denied again'}`,
  ].join('\n');
}

async function killAndAdopt(lab: string, b: BackendName | undefined): Promise<string> {
  const node = nodeOfPod(lab, VICTIM);
  const victim = labAgents(lab).find((a) => a.node === node.name);
  if (!victim || !b) return 'no agent';
  const killedAt = Date.now();
  process.kill(victim.pid, 'SIGKILL');
  const without = await measureReach(lab, { port: 5432, protocol: 'TCP', timeoutMs: 500 });
  const allowed = Object.values(without.matrix.results).filter((row) => row[VICTIM]).length;
  // The node's supervisor starts a new agent, which adopts what the kernel holds.
  const s = await until(async () => {
    const now = await statusOf(lab, node.name);
    return now.pid !== victim.pid && now.lastApply ? now : undefined;
  }, 15_000);
  if (!s) return `agent pid ${victim.pid} killed; NOT restarted within 15 s`;
  return [
    `agent pid ${victim.pid} killed; with no agent, ${allowed} pod(s) still reach ${VICTIM}:5432 as the policy says`,
    `its supervisor started pid ${s.pid} (restarts: ${s.restarts ?? 0}), in force ${Date.parse(s.lastApply?.at ?? '') - killedAt} ms after the kill: ` +
      `${s.lastApply?.mode ?? '?'}, ${s.lastApply?.changed ?? '?'} objects changed`,
  ].join('\n');
}

async function recentFlows(lab: string): Promise<string> {
  await measureReach(lab, {
    port: 5432,
    protocol: 'TCP',
    from: ['outside/client', 'shop/backend'],
    timeoutMs: 500,
  });
  // The agents drain the kernel's flow aggregates once per interval.
  await new Promise((r) => setTimeout(r, 2 * FLOW_INTERVAL_MS + 300));
  const flows: Flow[] = [];
  for (const a of labAgents(lab)) {
    const r = await agentRequest<{ flows: Flow[] }>(
      apiSocket(agentStateDir(lab, a.node)),
      `/v1/flows?pod=${encodeURIComponent(VICTIM)}&limit=8`,
    );
    flows.push(...r.flows);
  }
  flows.sort((x, y) => (x.lastSeen < y.lastSeen ? 1 : -1));
  return formatTable(FLOW_HEADERS, flows.slice(0, 8).map(flowRow));
}

export function agentSteps(lab: string, backend: () => BackendName | undefined): DemoStep[] {
  return [
    {
      title: 'One agent per node keeps the kernel equal to the desired state',
      command: `switchyard node status --lab ${lab}`,
      run: () => agentTable(lab),
    },
    {
      title: 'Change the dataplane behind the agent: it notices and repairs it',
      command: '(tamper with one node, then: switchyard node status)',
      run: () => tamperAndWatchRepair(lab, backend()),
    },
    {
      title:
        'Kill an agent with SIGKILL: traffic keeps its policy; its supervisor restarts it and it adopts the kernel untouched',
      command: `kill -9 <agent of ${VICTIM}'s node>; switchyard node status --lab ${lab}`,
      run: () => killAndAdopt(lab, backend()),
    },
    {
      title:
        'Flows: every denied connection with the rule that decided, allowed ones with their policy and process',
      command: `switchyard flows --lab ${lab} --pod ${VICTIM} --limit 8`,
      run: () => recentFlows(lab),
    },
  ];
}
