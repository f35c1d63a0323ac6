/**
 * Agent scale: "RSS under 150 MB and a full sync under 5 s on eBPF at 10k endpoints × 10 policies
 * each". What is measured is a real `switchyard agent` process (the CLI, as a node runs it) for
 * one node of a large cluster:
 *
 *   desired state: Kubernetes manifests generated into the lab's source directory: `endpoints`
 *     pods over namespaces of 100 pods each (namespace label `team`, pod labels `app`, `role`),
 *     and per namespace 2×P NetworkPolicies whose podSelectors (`app In …`, a window of 5 of the
 *     10 app values) select every pod exactly P times (P = 10); each policy has one ingress and one
 *     egress rule with a namespace+pod selector peer (IP sets of remote pods) on its own port.
 *   the node: `localPods` of those pods are placed on node-1 and exist for real (a lab with one
 *     node and those pods, backend none, its addresses pinned into the manifests); every other pod
 *     sits on one of ~endpoints/100 other nodes that have no interfaces here: they are only
 *     members of the IP sets the policies reference.
 *
 * Per backend and repetition (backends take turns): the node's dataplane is removed, an agent is
 * started with a fresh state directory, and the figures are
 *   full sync:    spawn → the agent's API answers with the first apply done (the API opens right
 *                 after it), split by the agent's own timestamps into process start, reading the
 *                 manifests + building the IR, and the kernel apply (+ reading back the fingerprint);
 *   label change: one local pod's `app` label flipped in its file (written by rename) → the agent
 *                 reports the new revision in force (debounce, re-read of every manifest, IR build,
 *                 incremental apply);
 *   memory:       VmRSS after the first sync and after the label changes, VmHWM (peak), from
 *                 /proc/<pid>/status.
 */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AgentStatus } from '../../agent/agent.js';
import type { BackendName } from '../../dataplane/backend.js';
import {
  DEFAULT_POLICY_MODE,
  formatTableModeSummary,
  POLICY_MODES,
  type PolicyMode,
  type TableModeSummary,
} from '../../ir/decision-table.js';
import { availableBackends } from '../../dataplane/registry.js';
import { agentStateDir, desiredDir } from '../../lab/agents.js';
import { converge, labDown, type LabState } from '../../lab/index.js';
import type { Model } from '../../model/index.js';
import { median, summarize } from '../stats.js';
import type { BenchRow, BenchScenarioResult } from '../results.js';
import { measuredScenario, type BenchContext, type BenchScenario } from '../types.js';
import {
  agentFlowSources,
  cpuSeconds,
  memoryMiB,
  resetNode,
  startAgent,
  stopAgent,
  waitForSync,
} from './support/agents.js';
import { benchModel } from './support/manifests.js';

export interface AgentScalePoint {
  endpoints: number;
  backends: readonly BackendName[];
}

export interface AgentScaleOptions {
  /** Cluster sizes, each with the backends measured at it (backends take turns per repetition). */
  points: readonly AgentScalePoint[];
  /** Pods on the measured node (they exist in a lab). */
  localPods: number;
  /** NetworkPolicies selecting each pod. */
  policiesPerPod: number;
  repetitions: number;
  /** Label changes per repetition. */
  updates: number;
  /** Lab name (default bag<pid>: "bench agent"). */
  lab?: string;
  /** Policy modes each backend is measured in (default both: tables next to the walk). */
  modes?: readonly PolicyMode[];
}

const ALL: readonly BackendName[] = ['ebpf', 'nftables', 'iptables'];

export const TARGET_RSS_MIB = 150;
export const TARGET_SYNC_MS = 5000;
export const TARGET_ENDPOINTS = 10_000;
/** Issue 17: a full sync in table mode no worse than 1.5× the walk's. */
export const TARGET_TABLE_SYNC_RATIO = 1.5;
/** The backend the sync and RSS targets are set for. */
const TARGET_BACKEND: BackendName = 'ebpf';

/**
 * Building the desired state grows faster than linearly with the cluster (see the notes), so
 * --quick stays at 1k endpoints, where every backend takes seconds; the full run adds the 10k of
 * the target on eBPF alone (minutes per sync on a 2-core machine today).
 */
export function agentScaleOptions(quick: boolean): AgentScaleOptions {
  const shared = { policiesPerPod: 10, repetitions: 1 };
  if (quick) return { ...shared, points: [{ endpoints: 1000, backends: ALL }], localPods: 20, updates: 3 };
  const target = { endpoints: TARGET_ENDPOINTS, backends: [TARGET_BACKEND] };
  return { ...shared, points: [{ endpoints: 2000, backends: ALL }, target], localPods: 100, updates: 2 };
}

const NODE = 'node-1';
const PODS_PER_NAMESPACE = 100;
const PODS_PER_NODE = 100;
const APPS = 10;
const ROLES = 4;
const TEAMS = 10;
const SYNC_TIMEOUT_MS = 900_000;
/** Idle window after the first sync over which the agent's own CPU use is read. */
const IDLE_MS = 2000;

interface PodSpec {
  ns: string;
  name: string;
  app: number;
  role: number;
  node: string;
  ip?: string;
}

export interface ClusterSpec {
  namespaces: string[];
  pods: PodSpec[];
  local: PodSpec[];
  policiesPerNamespace: number;
  nodes: number;
}

/** Which pods exist, where: `localPods` spread evenly over the cluster land on node-1. */
export function clusterSpec(o: {
  endpoints: number;
  localPods: number;
  policiesPerPod: number;
}): ClusterSpec {
  if (o.localPods < 1 || o.localPods > o.endpoints) throw new Error('localPods must be 1…endpoints');
  const nsCount = Math.max(1, Math.ceil(o.endpoints / PODS_PER_NAMESPACE));
  const namespaces = Array.from({ length: nsCount }, (_, i) => `ns${i}`);
  const remoteNodes = Math.min(199, Math.max(1, Math.ceil((o.endpoints - o.localPods) / PODS_PER_NODE)));
  const stride = o.endpoints / o.localPods;
  const pods: PodSpec[] = [];
  const local: PodSpec[] = [];
  let nextLocal = 0;
  let remote = 0;
  for (let g = 0; g < o.endpoints; g++) {
    const j = g % PODS_PER_NAMESPACE;
    const isLocal = local.length < o.localPods && g >= nextLocal;
    const pod: PodSpec = {
      ns: namespaces[Math.floor(g / PODS_PER_NAMESPACE)] as string,
      name: `p${j}`,
      app: j % APPS,
      role: j % ROLES,
      node: isLocal ? NODE : `node-${2 + (remote++ % remoteNodes)}`,
    };
    if (isLocal) {
      local.push(pod);
      nextLocal = Math.round(local.length * stride);
    }
    pods.push(pod);
  }
  // 2P policies per namespace, each selecting a window of 5 of the 10 app values: every pod is
  // selected by exactly P of them.
  return { namespaces, pods, local, policiesPerNamespace: 2 * o.policiesPerPod, nodes: remoteNodes + 1 };
}

function podDoc(p: PodSpec): string {
  return (
    `apiVersion: v1\nkind: Pod\nmetadata:\n  name: ${p.name}\n  namespace: ${p.ns}\n` +
    `  labels: { app: a${p.app}, role: r${p.role} }\n` +
    `spec:\n  nodeName: ${p.node}\n  containers: [{ name: c, ports: [{ containerPort: 8080, protocol: TCP }] }]\n` +
    (p.ip ? `status: { podIP: ${p.ip} }\n` : '')
  );
}

function policyDoc(ns: string, k: number): string {
  const apps = Array.from({ length: APPS / 2 }, (_, m) => `a${(k + m) % APPS}`).join(', ');
  return (
    `apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: { name: pol${k}, namespace: ${ns} }\nspec:\n` +
    `  podSelector: { matchExpressions: [{ key: app, operator: In, values: [${apps}] }] }\n` +
    `  policyTypes: [Ingress, Egress]\n` +
    `  ingress:\n    - from: [{ namespaceSelector: { matchLabels: { team: t${k % TEAMS} } }, podSelector: { matchLabels: { role: r${k % ROLES} } } }]\n` +
    `      ports: [{ port: ${8000 + k}, protocol: TCP }]\n` +
    `  egress:\n    - to: [{ namespaceSelector: { matchLabels: { team: t${(k + 3) % TEAMS} } }, podSelector: { matchLabels: { role: r${(k + 1) % ROLES} } } }]\n` +
    `      ports: [{ port: ${9000 + k}, protocol: TCP }]\n`
  );
}

/** One file per namespace: the namespace, its pods and its policies. */
export function namespaceFile(spec: ClusterSpec, nsIndex: number): string {
  const ns = spec.namespaces[nsIndex] as string;
  const docs = [
    `apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ${ns}\n  labels: { team: t${nsIndex % TEAMS} }\n`,
  ];
  for (const p of spec.pods) if (p.ns === ns) docs.push(podDoc(p));
  for (let k = 0; k < spec.policiesPerNamespace; k++) docs.push(policyDoc(ns, k));
  return docs.join('---\n');
}

function fileName(nsIndex: number): string {
  return `ns${String(nsIndex).padStart(4, '0')}.yaml`;
}

/** The lab: node-1 with the local pods, no backend (the agent is what applies one). */
function localModel(spec: ClusterSpec): Model {
  const namespaces = [...new Set(spec.local.map((p) => p.ns))];
  const docs = [
    ...namespaces.map((n) => `apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ${n}\n`),
    ...spec.local.map(podDoc),
  ];
  return benchModel('agent bench lab', 'agent-local.yaml', docs);
}

export interface AgentScaleSample {
  backend: BackendName;
  mode: PolicyMode;
  /** What the agent reported in force after the first sync: tables, walks, overflows. */
  policy?: TableModeSummary;
  endpoints: number;
  /** Spawn → first sync done and API answering. */
  fullSyncMs: number;
  startMs: number;
  buildMs: number;
  applyMs: number;
  /** Label changes: write → revision in force. */
  updateMs: number[];
  /** The agent's own apply time of each label change. */
  updateApplyMs: number[];
  updateModes: string[];
  rssAfterSyncMiB: number;
  rssAfterUpdatesMiB: number;
  hwmMiB: number;
  /** The agent's CPU share while idle after the sync (drift checks). */
  idleCpu: number;
  changed: number;
  flowSources?: string[];
}

export interface AgentScaleData {
  options: AgentScaleOptions;
  points: AgentScalePointData[];
}

export interface AgentScalePointData {
  spec: { endpoints: number; localPods: number; namespaces: number; policies: number; nodes: number };
  samples: AgentScaleSample[];
  labUpMs: number;
  manifestBytes: number;
}

async function oneSync(
  lab: string,
  state: LabState,
  backend: BackendName,
  mode: PolicyMode,
  spec: ClusterSpec,
  options: AgentScaleOptions,
  endpoints: number,
  source: string,
): Promise<AgentScaleSample> {
  const node = state.topology?.nodes.find((n) => n.name === NODE);
  if (!node) throw new Error(`lab ${lab} has no ${NODE}`);
  const stateDir = agentStateDir(lab, NODE);
  const target = { scope: lab, node: NODE, netns: node.netns };
  await resetNode(backend, target, stateDir);
  const h = startAgent({
    lab,
    node: NODE,
    netns: node.netns,
    backend,
    source,
    stateDir,
    flows: true,
    policyMode: mode,
  });
  try {
    const s = await waitForSync(h, (st) => st.lastApply !== undefined, SYNC_TIMEOUT_MS);
    const answered = Date.now();
    const last = s.lastApply as NonNullable<AgentStatus['lastApply']>;
    const started = Date.parse(s.startedAt);
    const applyEnd = Date.parse(last.at);
    const afterSync = memoryMiB(h.pid);
    const cpu0 = cpuSeconds(h.pid);
    await new Promise((r) => setTimeout(r, IDLE_MS));
    const idleCpu = (cpuSeconds(h.pid) - cpu0) / (IDLE_MS / 1000);
    const updateMs: number[] = [];
    const updateApplyMs: number[] = [];
    const updateModes: string[] = [];
    let revision = last.revision;
    for (let u = 0; u < options.updates; u++) {
      // Flip the app label of one local pod (a different one each time) in its namespace's file.
      const pod = spec.local[u % spec.local.length] as PodSpec;
      pod.app = (pod.app + 1) % APPS;
      const nsIndex = spec.namespaces.indexOf(pod.ns);
      const file = join(source, fileName(nsIndex));
      writeFileSync(`${file}.tmp`, namespaceFile(spec, nsIndex));
      const written = Date.now();
      renameSync(`${file}.tmp`, file);
      const before = revision;
      const st = await waitForSync(
        h,
        (x) => x.revision !== before && x.lastApply !== undefined && x.lastApply.revision === x.revision,
        SYNC_TIMEOUT_MS,
        5,
      );
      updateMs.push(Date.now() - written);
      updateApplyMs.push(st.lastApply?.durationMs ?? NaN);
      updateModes.push(st.lastApply?.mode ?? '?');
      revision = st.revision ?? '';
    }
    const afterUpdates = memoryMiB(h.pid);
    return {
      backend,
      mode,
      ...(s.policy ? { policy: s.policy } : {}),
      endpoints,
      fullSyncMs: answered - h.spawnedAt,
      startMs: started - h.spawnedAt,
      buildMs: applyEnd - last.durationMs - started,
      applyMs: last.durationMs,
      updateMs,
      updateApplyMs,
      updateModes,
      rssAfterSyncMiB: afterSync.rss,
      rssAfterUpdatesMiB: afterUpdates.rss,
      hwmMiB: afterUpdates.hwm,
      idleCpu,
      changed: last.changed,
      ...(agentFlowSources(h) ? { flowSources: agentFlowSources(h) as string[] } : {}),
    };
  } finally {
    await stopAgent(h);
  }
}

async function measurePoint(
  ctx: BenchContext,
  options: AgentScaleOptions,
  point: AgentScalePoint,
  lab: string,
): Promise<AgentScalePointData> {
  const backends = point.backends.filter((b) => availableBackends().includes(b));
  const spec = clusterSpec({ ...options, endpoints: point.endpoints });
  await labDown(lab);
  try {
    const upStart = Date.now();
    const r = await converge({
      name: lab,
      model: localModel(spec),
      files: [],
      mode: 'up',
      backend: 'none',
      nodeCount: 1,
    });
    const labUpMs = Date.now() - upStart;
    // Pin the lab's addresses into the cluster's manifests: the agent's IR then names the same
    // pods at the same addresses on the same interfaces.
    const address = new Map(r.state.ir.endpoints.map((e) => [e.id, e.addresses[0]]));
    for (const p of spec.local) {
      const ip = address.get(`${p.ns}/${p.name}`);
      if (!ip) throw new Error(`the lab has no pod ${p.ns}/${p.name}`);
      p.ip = ip;
    }
    ctx.progress.tick(`lab up (${spec.local.length} pods)`);
    const source = desiredDir(lab);
    mkdirSync(source, { recursive: true });
    const appsBefore = spec.local.map((p) => p.app);
    let manifestBytes = 0;
    const samples: AgentScaleSample[] = [];
    for (let rep = 0; rep < options.repetitions; rep++) {
      for (const backend of backends)
        for (const mode of options.modes ?? POLICY_MODES) {
          // Every run starts from the same manifests.
          spec.local.forEach((p, i) => (p.app = appsBefore[i] as number));
          manifestBytes = 0;
          spec.namespaces.forEach((_, i) => {
            const text = namespaceFile(spec, i);
            manifestBytes += text.length;
            writeFileSync(join(source, fileName(i)), text);
          });
          samples.push(await oneSync(lab, r.state, backend, mode, spec, options, point.endpoints, source));
          ctx.progress.tick(`${backend} ${mode} ${point.endpoints} ${rep + 1}/${options.repetitions}`);
        }
    }
    return {
      spec: {
        endpoints: point.endpoints,
        localPods: spec.local.length,
        namespaces: spec.namespaces.length,
        policies: spec.namespaces.length * spec.policiesPerNamespace,
        nodes: spec.nodes,
      },
      samples,
      labUpMs,
      manifestBytes,
    };
  } finally {
    await labDown(lab);
  }
}

export async function measureAgentScale(
  ctx: BenchContext,
  options: AgentScaleOptions,
): Promise<AgentScaleData> {
  const avail = (p: AgentScalePoint): number =>
    p.backends.filter((b) => availableBackends().includes(b)).length;
  const modes = (options.modes ?? POLICY_MODES).length;
  ctx.progress.total(options.points.reduce((n, p) => n + 1 + avail(p) * modes * options.repetitions, 0));
  const lab = options.lab ?? `bag${process.pid % 100_000}`;
  const points: AgentScalePointData[] = [];
  for (const point of options.points) points.push(await measurePoint(ctx, options, point, lab));
  return { options, points };
}

export function agentScaleResult(data: AgentScaleData): BenchScenarioResult {
  const rows: BenchRow[] = [];
  const notes: string[] = [];
  for (const { spec, samples, labUpMs, manifestBytes } of data.points) {
    const runs = [...new Set(samples.map((s) => `${s.backend}/${s.mode}`))].map((k) => {
      const [backend, mode] = k.split('/') as [BackendName, PolicyMode];
      return { backend, mode, ss: samples.filter((s) => s.backend === backend && s.mode === mode) };
    });
    for (const { backend, mode, ss } of runs) {
      const params = { endpoints: spec.endpoints, policies: data.options.policiesPerPod, mode };
      rows.push(
        summarize(
          backend,
          { ...params, op: 'full sync' },
          ss.map((s) => s.fullSyncMs),
        ),
      );
      rows.push(
        summarize(
          backend,
          { ...params, op: 'label change' },
          ss.flatMap((s) => s.updateMs),
        ),
      );
    }
    notes.push(
      `${spec.endpoints} endpoints: ${spec.endpoints} pods in ${spec.namespaces} namespaces on ${spec.nodes} nodes, ${spec.policies} NetworkPolicies ` +
        `(each pod selected by ${data.options.policiesPerPod}; one ingress and one egress rule each, peers by namespace+pod selector), ` +
        `${(manifestBytes / 1e6).toFixed(1)} MB of YAML in ${spec.namespaces} files; the agent's node-1 holds ${spec.localPods} real pods ` +
        `(a lab, up in ${(labUpMs / 1000).toFixed(1)} s), every other pod is a remote endpoint (IP set member only)`,
    );
    for (const { backend, mode, ss } of runs) notes.push(sampleNote(backend, mode, spec.endpoints, ss));
    notes.push(...tableVsWalk(spec.endpoints, samples));
  }
  notes.push(
    'full sync = spawn of `switchyard agent` → its API answers with the first apply done (fresh state directory, node dataplane removed before); ' +
      "label change = one local pod's label flipped in its file → the new revision in force (debounce 20 ms, every manifest re-read, IR rebuilt, incremental apply)",
  );
  notes.push(...targetVerdicts(data));
  return { name: 'agent', unit: 'ms', better: 'lower', rows, notes };
}

function sampleNote(
  backend: BackendName,
  mode: PolicyMode,
  endpoints: number,
  ss: AgentScaleSample[],
): string {
  const hwm = Math.max(...ss.map((s) => s.hwmMiB));
  const policy = ss[0]?.policy;
  return (
    `${backend} ${mode} ${endpoints}: full sync ${(median(ss.map((s) => s.fullSyncMs)) / 1000).toFixed(2)} s = process start ` +
    `${median(ss.map((s) => s.startMs)).toFixed(0)} ms + read manifests and build the IR ${median(ss.map((s) => s.buildMs)).toFixed(0)} ms ` +
    `+ kernel apply (with fingerprint) ${median(ss.map((s) => s.applyMs)).toFixed(0)} ms + flow sources and API; ` +
    `${ss[0]?.changed ?? 0} kernel objects; label change: agent apply ${median(ss.flatMap((s) => s.updateApplyMs)).toFixed(0)} ms of it ` +
    `(${[...new Set(ss.flatMap((s) => s.updateModes))].join('/')}); RSS after sync ${median(ss.map((s) => s.rssAfterSyncMiB)).toFixed(0)} MiB, ` +
    `after the label changes ${median(ss.map((s) => s.rssAfterUpdatesMiB)).toFixed(0)} MiB, peak (VmHWM) ${hwm.toFixed(0)} MiB; ` +
    `idle CPU after sync ${(100 * median(ss.map((s) => s.idleCpu))).toFixed(0)}% of a core` +
    (policy ? `; ${formatTableModeSummary(policy)}` : '') +
    (ss[0]?.flowSources ? `; flow sources: ${ss[0].flowSources.join(', ') || 'none'}` : '')
  );
}

/** Table mode's full sync against the walk's, per backend (the target: at most 1.5×). */
function tableVsWalk(endpoints: number, samples: readonly AgentScaleSample[]): string[] {
  const out: string[] = [];
  for (const backend of new Set(samples.map((s) => s.backend))) {
    const sync = (mode: PolicyMode): number =>
      median(samples.filter((s) => s.backend === backend && s.mode === mode).map((s) => s.fullSyncMs));
    const [table, walk] = [sync('table'), sync('walk')];
    if (!Number.isFinite(table) || !Number.isFinite(walk) || walk <= 0) continue;
    const ratio = table / walk;
    out.push(
      `${backend} ${endpoints}: full sync in table mode ${ratio.toFixed(2)}× the walk's ` +
        `(target ≤ ${TARGET_TABLE_SYNC_RATIO}×: ${ratio <= TARGET_TABLE_SYNC_RATIO ? 'PASS' : 'MISSED'})`,
    );
  }
  return out;
}

export interface TargetVerdict {
  endpoints: number;
  syncMs: number;
  rssMiB: number;
  hwmMiB: number;
  syncPass: boolean;
  rssPass: boolean;
}

/** PASS/FAIL of the targets at the largest size measured on the target backend (eBPF). */
export function ebpfVerdict(data: AgentScaleData): TargetVerdict | undefined {
  const point = [...data.points]
    .filter((p) => p.samples.some((s) => s.backend === TARGET_BACKEND))
    .sort((a, b) => b.spec.endpoints - a.spec.endpoints)[0];
  if (!point) return undefined;
  // The default mode's figures (the targets were set before there was a choice).
  const mode = point.samples.some((s) => s.mode === DEFAULT_POLICY_MODE) ? DEFAULT_POLICY_MODE : undefined;
  const ss = point.samples.filter(
    (s) => s.backend === TARGET_BACKEND && (mode === undefined || s.mode === mode),
  );
  const syncMs = median(ss.map((s) => s.fullSyncMs));
  const rssMiB = Math.max(...ss.map((s) => Math.max(s.rssAfterSyncMiB, s.rssAfterUpdatesMiB)));
  const hwmMiB = Math.max(...ss.map((s) => s.hwmMiB));
  return {
    endpoints: point.spec.endpoints,
    syncMs,
    rssMiB,
    hwmMiB,
    syncPass: syncMs < TARGET_SYNC_MS,
    rssPass: rssMiB < TARGET_RSS_MIB,
  };
}

function targetVerdicts(data: AgentScaleData): string[] {
  const v = ebpfVerdict(data);
  if (!v) return ['targets: eBPF was not measured'];
  const at =
    v.endpoints === TARGET_ENDPOINTS
      ? `at the target's ${TARGET_ENDPOINTS} endpoints`
      : `at ${v.endpoints} endpoints (the targets are set for ${TARGET_ENDPOINTS}; run without --quick for that size)`;
  return [
    `targets on ebpf ${at}: full sync under ${TARGET_SYNC_MS / 1000} s: ${v.syncPass ? 'PASS' : 'FAIL'} (${(v.syncMs / 1000).toFixed(2)} s); ` +
      `RSS under ${TARGET_RSS_MIB} MB: ${v.rssPass ? 'PASS' : 'FAIL'} (${v.rssMiB.toFixed(0)} MiB after sync and updates, peak ${v.hwmMiB.toFixed(0)} MiB)`,
  ];
}

export const scenario: BenchScenario = measuredScenario({
  name: 'agent',
  description:
    'a real agent process at 10k endpoints × 10 policies each: full sync time, one label change, RSS (targets on eBPF: < 5 s, < 150 MB)',
  options: agentScaleOptions,
  measure: measureAgentScale,
  result: agentScaleResult,
});
