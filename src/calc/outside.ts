/**
 * The reference evaluator for traffic from outside the cluster: a client reaches a node port
 * (`NODE:PORT` at the node's external address) or a load-balancer address (`IP:PORT`). First the
 * service decides which backends are eligible and what source address they see, as kube-proxy
 * does; then the policy of the translated packet decides (the ordinary evaluator).
 *
 * - `externalTrafficPolicy: Cluster`: any ready backend, from any node the traffic enters; the
 *   entry node masquerades the client to its own fabric address (`Node.address`), so replies
 *   return through it — policy sees the node, not the client. For a backend on the entry node
 *   itself the source depends on the dataplane: kube-proxy (and the netfilter backends) masquerade
 *   it too; the eBPF backend, like Cilium, keeps the client's address (nothing has to return
 *   through another node). Such a path carries both (`otherSource`); `localSource` picks which
 *   one is the path's own.
 * - `Local`: only the entry node's own backends, client address kept; a node without one drops.
 * - No backend at all: refused (TCP RST / ICMP port unreachable), as for a cluster IP.
 * - A load-balancer address enters at the nodes the fabric routes it to: every node under
 *   Cluster, under Local the nodes with a backend (a cloud load balancer's health checks).
 */
import type { IR, ServiceBackend, ServicePortTable } from '../ir/types.js';
import { parseAddress } from '../util/ip.js';
import type { Packet } from './api.js';
import { Oracle, type Verdict } from './evaluate.js';
import { servesPort } from './serving.js';

/** Where traffic from outside is aimed: a node's node port, or a load-balancer address and service port. */
export type ExternalEntry =
  { kind: 'nodeport'; node: string; port: number } | { kind: 'lb'; address: string; port: number };

/** Whose address the backend (and its ingress policy) sees. */
export type ExternalSource = 'client' | 'node';

/**
 * Why nothing serves: no service has the node port or load-balancer port; the service has no
 * ready backend (refused); under Local the entry node has none of its own (dropped).
 */
export type ExternalProblem = 'port-not-defined' | 'no-endpoints' | 'no-local-endpoints';

/** One way through: traffic entering `entryNode`, translated to `backend`. */
export interface ExternalPath {
  entryNode: string;
  backend: ServiceBackend;
  /** The source address after translation: the client's, or the entry node's fabric address (SNAT). */
  source: string;
  sourceKind: ExternalSource;
  /** Policy of the translated packet (source → backend address, target port), prefilters included. */
  verdict: Verdict;
  /** Policy allows it and the backend pod listens on the target port (a non-pod backend is assumed to). */
  serves: boolean;
  /**
   * Cluster, backend on the entry node: what a dataplane with the other convention delivers (the
   * client's address where this path masquerades, or the other way round), with its own verdict.
   */
  otherSource?: { source: string; sourceKind: ExternalSource; verdict: Verdict; serves: boolean };
}

/**
 * Whose address a backend on the entry node sees under Cluster: `node` as kube-proxy does
 * (iptables, nftables), `client` as Cilium does (eBPF).
 */
export type ClusterLocalSource = ExternalSource;

export interface ExternalVerdict {
  entry: ExternalEntry;
  client: string;
  /** The port table the entry translates with; absent when none has it. */
  table?: ServicePortTable;
  /** Nodes the traffic enters: the node port's node, or where the fabric sends the load-balancer address. */
  entryNodes: string[];
  /** Entry nodes that have no eligible backend (Local without a local one; every node without backends). */
  unservedNodes: string[];
  paths: ExternalPath[];
  problem?: ExternalProblem;
  /** A prefilter of an entry node drops the client before any translation. */
  prefilter?: { node: string; name: string };
}

const ENTRY = /^(nodeport|lb)\/([^\s:/]+):(\d{1,5})$/;

/** `nodeport/NODE:PORT` (NODE a node name or its external address) or `lb/IP:PORT`; undefined for anything else. */
export function parseExternalEntry(text: string): ExternalEntry | undefined {
  const m = ENTRY.exec(text);
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) throw new Error(`'${text}': the port must be 1-65535`);
  const where = m[2] as string;
  if (m[1] === 'nodeport') return { kind: 'nodeport', node: where, port };
  if (!parseAddress(where)) throw new Error(`'${text}': ${where} is not an address (lb/IP:PORT)`);
  return { kind: 'lb', address: where, port };
}

export function entryText(e: ExternalEntry): string {
  return e.kind === 'nodeport' ? `nodeport/${e.node}:${e.port}` : `lb/${e.address}:${e.port}`;
}

/** The node a node-port entry names, by name or external address; throws listing the nodes. */
function entryNode(ir: IR, given: string): string {
  const node = ir.nodes.find((n) => n.name === given || n.externalAddress === given);
  if (!node) {
    const known = ir.nodes.map((n) => `${n.name} (${n.externalAddress ?? 'not exposed'})`);
    throw new Error(`there is no node '${given}' (nodes: ${known.join(', ') || 'none'})`);
  }
  if (!node.externalAddress) throw new Error(`node ${node.name} has no external address`);
  return node.name;
}

/** The table an entry reaches: by node port, or by load-balancer address and service port. */
export function externalTable(
  ir: IR,
  entry: ExternalEntry,
  protocol: Packet['protocol'],
): ServicePortTable | undefined {
  return ir.services.find((t) => {
    if (t.protocol !== protocol) return false;
    if (entry.kind === 'nodeport') return t.nodePort === entry.port;
    return t.port === entry.port && (t.loadBalancerIPs ?? []).includes(entry.address);
  });
}

/** Backends a connection entering `node` may be sent to. */
export function eligibleBackends(table: ServicePortTable, node: string): ServiceBackend[] {
  return table.externalTrafficPolicy === 'Local'
    ? table.backends.filter((b) => b.node === node)
    : [...table.backends];
}

/** Nodes the fabric sends a load-balancer address to (see the module comment). */
function loadBalancerNodes(ir: IR, table: ServicePortTable): string[] {
  const all = ir.nodes.map((n) => n.name);
  if (table.externalTrafficPolicy !== 'Local') return all;
  const withBackend = all.filter((n) => table.backends.some((b) => b.node === n));
  return withBackend.length > 0 ? withBackend : all;
}

/**
 * What happens to a new connection from `client` (an address outside the cluster) to `entry`:
 * which backends it may reach through which node, with which source address, and whether
 * policy lets the translated packet through.
 */
export function evaluateExternal(
  ir: IR,
  client: string,
  entry: ExternalEntry,
  protocol: 'TCP' | 'UDP' | 'SCTP',
  oracle = new Oracle(ir),
  localSource: ClusterLocalSource = 'node',
): ExternalVerdict {
  const nodeName = entry.kind === 'nodeport' ? entryNode(ir, entry.node) : undefined;
  const table = externalTable(ir, entry, protocol);
  const base = { entry, client };
  if (!table)
    return {
      ...base,
      entryNodes: nodeName ? [nodeName] : [],
      unservedNodes: nodeName ? [nodeName] : [],
      paths: [],
      problem: 'port-not-defined',
    };
  const entryNodes = nodeName ? [nodeName] : loadBalancerNodes(ir, table);
  const withTable = { ...base, table, entryNodes };
  // The prefilter sits where the fabric enters the node: it sees the client before any NAT.
  for (const node of entryNodes) {
    const name = oracle.prefilterDrop(node, client);
    if (name) return { ...withTable, unservedNodes: [], paths: [], prefilter: { node, name } };
  }
  const nodes = new Map(ir.nodes.map((n) => [n.name, n]));
  const paths: ExternalPath[] = [];
  const unservedNodes: string[] = [];
  for (const node of entryNodes) {
    const eligible = eligibleBackends(table, node);
    if (eligible.length === 0) unservedNodes.push(node);
    const local = table.externalTrafficPolicy === 'Local';
    const nodeAddress = nodes.get(node)?.address ?? client;
    const judge = (backend: ServiceBackend, sourceKind: ExternalSource) => {
      const source = sourceKind === 'client' ? client : nodeAddress;
      const verdict = oracle.evaluate({ src: source, dst: backend.address, protocol, dport: backend.port });
      const pod = oracle.endpointById(backend.endpoint);
      const serves = verdict.allowed && (!pod || servesPort(pod, backend.port, protocol));
      return { source, sourceKind, verdict, serves };
    };
    for (const backend of eligible) {
      const varies = !local && backend.node === node;
      const kind: ExternalSource = local ? 'client' : varies ? localSource : 'node';
      const other = varies ? judge(backend, kind === 'node' ? 'client' : 'node') : undefined;
      paths.push({
        entryNode: node,
        backend,
        ...judge(backend, kind),
        ...(other ? { otherSource: other } : {}),
      });
    }
  }
  const problem: ExternalProblem | undefined =
    table.backends.length === 0 ? 'no-endpoints' : paths.length === 0 ? 'no-local-endpoints' : undefined;
  return { ...withTable, unservedNodes, paths, ...(problem ? { problem } : {}) };
}

/** The backends a pod's connection to a cluster IP may reach: under internalTrafficPolicy Local only its node's. */
export function internalBackends(table: ServicePortTable, clientNode: string | undefined): ServiceBackend[] {
  if (table.internalTrafficPolicy !== 'Local' || clientNode === undefined) return [...table.backends];
  return table.backends.filter((b) => b.node === clientNode);
}

/**
 * ClientIP session affinity as kube-proxy keeps it (the `recent` match, the eBPF affinity map): a
 * client's new connection goes to the backend it last used if that was less than `timeoutSeconds`
 * ago and the backend is still eligible; each connection refreshes the time.
 */
export class ClientIpAffinity {
  private readonly last = new Map<string, { backend: string; at: number }>();

  constructor(private readonly table: ServicePortTable) {}

  /**
   * The backend (`endpoint`) of a new connection from `client` at `nowSeconds`: the remembered
   * one while it holds, else `choose(eligible)` (the dataplane's random pick).
   */
  pick(
    client: string,
    nowSeconds: number,
    eligible: readonly ServiceBackend[],
    choose: (eligible: readonly ServiceBackend[]) => ServiceBackend | undefined,
  ): ServiceBackend | undefined {
    const affinity = this.table.affinity;
    const held = this.last.get(client);
    const kept =
      affinity.mode === 'ClientIP' && held && nowSeconds - held.at < affinity.timeoutSeconds
        ? eligible.find((b) => b.endpoint === held.backend)
        : undefined;
    const backend = kept ?? choose(eligible);
    if (backend && affinity.mode === 'ClientIP')
      this.last.set(client, { backend: backend.endpoint, at: nowSeconds });
    return backend;
  }
}
