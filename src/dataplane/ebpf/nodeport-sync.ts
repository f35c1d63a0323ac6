/**
 * What one node's node-port maps should hold: for every service port reached from outside, a key
 * for the node's external address and node port, and one for each load-balancer address and the
 * service port, with the backends this node may send to. The map contents are then brought there
 * by the connect-time load balancer's difference (planServiceSync): the same layouts, the same
 * ordering guarantees (a slot below a count is always filled), the same stable slots.
 */
import type { IR, ServiceBackend, ServicePortTable } from '../../ir/types.js';
import { IPPROTO } from './layout.js';
import { isIpv4 } from './node.js';
import { NP_BACKEND_REMOTE } from './nodeport-layout.js';
import type { NodePortAddresses } from './nodeport-programs.js';
import type { BackendValue } from './services-layout.js';
import type { DesiredServicePort, DesiredServices } from './services-sync.js';

/** Protocols the node-port programs translate (SCTP passes untranslated). */
const TRANSLATED = new Set<ServicePortTable['protocol']>(['TCP', 'UDP']);

export interface DesiredNodePorts extends DesiredServices {
  /** The addresses the node's programs are generated with; undefined when the node is unknown. */
  addresses: NodePortAddresses | undefined;
}

function byEndpoint(a: ServiceBackend, b: ServiceBackend): number {
  return a.endpoint < b.endpoint ? -1 : a.endpoint > b.endpoint ? 1 : 0;
}

/**
 * The backends traffic entering `node` may go to: all of them (Cluster), or only those on the
 * node (Local: the client's address is kept and nothing leaves the node). A backend elsewhere is
 * marked remote: its connections are source-translated to the node.
 */
export function nodePortBackends(t: ServicePortTable, node: string): BackendValue[] {
  const local = t.externalTrafficPolicy === 'Local';
  const seen = new Set<string>();
  const out: BackendValue[] = [];
  for (const b of [...t.backends].sort(byEndpoint)) {
    if (!isIpv4(b.address) || (local && b.node !== node)) continue;
    const id = `${b.address}:${b.port}`;
    if (seen.has(id)) continue;
    seen.add(id);
    out.push({ addr: b.address, port: b.port, pad: b.node === node ? 0 : NP_BACKEND_REMOTE });
  }
  return out;
}

/** True when the IR asks for traffic from outside anywhere (node ports or load-balancer addresses). */
export function reachedFromOutside(t: ServicePortTable): boolean {
  return t.nodePort !== undefined || (t.loadBalancerIPs?.length ?? 0) > 0;
}

/** One table's part of a node's node-port maps. */
interface TablePorts {
  ports: DesiredServicePort[];
  vips: string[];
  skipped: string[];
}

/**
 * Memoized by the table object and the node (an incremental IR hands the same object for a service
 * that did not change): the same DesiredServicePort objects again, which the planner skips unread.
 */
const tablePortsMemo = new WeakMap<ServicePortTable, { where: string; out: TablePorts }>();

function tablePorts(t: ServicePortTable, node: string, external: string | undefined): TablePorts {
  const where = `${node}\0${external ?? ''}`;
  const known = tablePortsMemo.get(t);
  if (known?.where === where) return known.out;
  const out: TablePorts = { ports: [], vips: [], skipped: [] };
  tablePortsMemo.set(t, { where, out });
  if (!TRANSLATED.has(t.protocol)) {
    out.skipped.push(`${t.id}: ${t.protocol} is not translated from outside by the eBPF backend`);
    return out;
  }
  const backends = nodePortBackends(t, node);
  const affinity = t.affinity.mode === 'ClientIP' ? Math.max(1, t.affinity.timeoutSeconds) : 0;
  const proto = IPPROTO[t.protocol];
  if (t.nodePort !== undefined && external)
    out.ports.push({
      id: `${t.id}@node`,
      key: { vip: external, port: t.nodePort, proto, node: 0 },
      affinity,
      backends,
    });
  for (const lb of t.loadBalancerIPs ?? []) {
    if (!isIpv4(lb)) {
      out.skipped.push(`${t.id}: IPv6 load-balancer address ${lb} is not translated by the eBPF backend`);
      continue;
    }
    out.vips.push(lb);
    out.ports.push({
      id: `${t.id}@${lb}`,
      key: { vip: lb, port: t.port, proto, node: 0 },
      affinity,
      backends,
    });
  }
  return out;
}

export function desiredNodePorts(ir: IR, node: string): DesiredNodePorts {
  const self = ir.nodes.find((n) => n.name === node);
  const external = self?.externalAddress && isIpv4(self.externalAddress) ? self.externalAddress : undefined;
  const ports: DesiredServicePort[] = [];
  const vips = new Set<string>();
  const skipped: string[] = [];
  for (const t of ir.services) {
    if (!reachedFromOutside(t)) continue;
    const part = tablePorts(t, node, external);
    for (const p of part.ports) ports.push(p);
    for (const v of part.vips) vips.add(v);
    for (const s of part.skipped) skipped.push(s);
  }
  const addresses =
    self && isIpv4(self.address) ? { own: external ?? self.address, snat: self.address } : undefined;
  return { ports, vips: [...vips].sort(), skipped, addresses };
}

/** What `switchyard compile` shows of a node's node-port load balancer (comment lines). */
export function describeNodePorts(
  ir: IR,
  node: string,
): { lines: string[]; addresses: NodePortAddresses | undefined } {
  const d = desiredNodePorts(ir, node);
  if (d.ports.length === 0 || !d.addresses) return { lines: [], addresses: undefined };
  const remote = (p: DesiredServicePort): number =>
    p.backends.filter((b) => b.pad === NP_BACKEND_REMOTE).length;
  const lines = [
    '',
    `# node ports and load-balancer addresses (tcx ingress/egress on the fabric interface; refused → ${d.addresses.own}, ` +
      `source-translated to ${d.addresses.snat} for backends on other nodes)`,
    ...d.ports.map(
      (p) =>
        `#   ${p.key.vip}:${p.key.port}/${p.key.proto === IPPROTO.TCP ? 'TCP' : 'UDP'}  ${p.id}  ` +
        `${p.backends.length} backends (${remote(p)} remote)${p.affinity ? `, ClientIP ${p.affinity}s` : ''}`,
    ),
    ...d.skipped.map((s) => `#   skipped: ${s}`),
  ];
  return { lines, addresses: d.addresses };
}
