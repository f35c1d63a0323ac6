/**
 * How `switchyard flows` shows records: the table (pods named as the console and Hubble name
 * them, addresses for everything else), fixed-width rows for `--follow` that print a flow again
 * only when its counts moved, and Hubble's JSON (`-o jsonpb`). Pure, so it is unit-tested.
 */
import type { Flow, FlowPeer, FlowProcess } from '../observe/flows.js';
import { addressWithPort, parseAddress } from '../util/ip.js';

/** `shop/db:5432` for a pod, the address otherwise (`[fd00:5957::9]:5432` for IPv6). */
function endText(peer: FlowPeer | undefined, address: string, port?: number): string {
  if (port === undefined) return peer ? peer.pod : address;
  return peer ? `${peer.pod}:${port}` : addressWithPort(address, port);
}

/** An aggregate (sport 0) stands for every source port: only the pod or address is shown. */
export function sourceText(f: Flow): string {
  return endText(f.source, f.src, f.sport === 0 ? undefined : f.sport);
}

export function destinationText(f: Flow): string {
  return endText(f.destination, f.dst, f.dport);
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

export function flowRow(f: Flow): string[] {
  return [
    f.lastSeen.slice(11, 23),
    f.firstSeen.slice(11, 23),
    f.node,
    f.protocol,
    sourceText(f),
    destinationText(f),
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

// --- --follow ---------------------------------------------------------------------------------

/** Columns of a streamed row, fixed widths (the last one takes what it needs). */
function followColumns(nodeWidth: number): { header: string; width: number; right?: boolean }[] {
  return [
    { header: 'TIME', width: 12 },
    { header: 'NODE', width: Math.max(4, nodeWidth) },
    { header: 'PROTO', width: 5 },
    // Wide enough for a lab IPv6 address with a port: `[fd00:5957:0:1::ffff]:65535`.
    { header: 'SOURCE', width: 28 },
    { header: 'DESTINATION', width: 28 },
    { header: 'VERDICT', width: 7 },
    { header: 'CONNS', width: 7, right: true },
    { header: 'PKTS', width: 8, right: true },
    { header: 'BYTES', width: 10, right: true },
    { header: 'ENDPOINT', width: 24 },
    { header: 'PROCESS', width: 28 },
    { header: 'DECIDED BY', width: 0 },
  ];
}

/** Too long for its column: keep the end (a pod's name and port tell it apart), mark the cut. */
function fit(text: string, width: number, right = false): string {
  if (width === 0) return text;
  const cut = text.length > width ? `…${text.slice(text.length - width + 1)}` : text;
  return right ? cut.padStart(width) : cut.padEnd(width);
}

interface Counts {
  connections: number;
  packets: number;
  bytes: number;
}

/**
 * `--follow`'s printer: one aligned line when a flow first shows up (its totals) and one when
 * its counts change (what was added: `+3`); updates that move no count (a process joined, the
 * same totals re-sent) print nothing.
 */
export class FollowPrinter {
  private readonly seen = new Map<string, Counts>();
  private readonly columns: ReturnType<typeof followColumns>;

  constructor(nodeNames: readonly string[]) {
    this.columns = followColumns(Math.max(0, ...nodeNames.map((n) => n.length)));
  }

  header(): string {
    return this.line(this.columns.map((c) => c.header));
  }

  private line(cells: readonly string[]): string {
    return this.columns
      .map((c, i) => fit(cells[i] ?? '', c.width, c.right))
      .join('  ')
      .trimEnd();
  }

  /** What changed since this flow was last printed; undefined when nothing did. */
  update(f: Flow): { flow: Flow; added?: Counts } | undefined {
    const id = `${f.node}|${f.key}`;
    const before = this.seen.get(id);
    this.seen.set(id, { connections: f.connections, packets: f.packets, bytes: f.bytes });
    if (!before) return { flow: f };
    const added = {
      connections: f.connections - before.connections,
      packets: f.packets - before.packets,
      bytes: f.bytes - before.bytes,
    };
    if (added.connections === 0 && added.packets === 0 && added.bytes === 0) return undefined;
    return { flow: f, added };
  }

  /** The row of an update (see `update`): totals the first time, `+N` after. */
  row(u: { flow: Flow; added?: Counts }): string {
    const f = u.flow;
    const count = (total: number, added: number | undefined): string =>
      added === undefined ? String(total) : `+${added}`;
    return this.line([
      f.lastSeen.slice(11, 23),
      f.node,
      f.protocol,
      sourceText(f),
      destinationText(f),
      f.verdict.toUpperCase(),
      count(f.connections, u.added?.connections),
      count(f.packets, u.added?.packets),
      count(f.bytes, u.added?.bytes),
      endpointText(f),
      processText(f),
      decidedBy(f),
    ]);
  }
}

// --- -o jsonpb --------------------------------------------------------------------------------

const HUBBLE_VERDICT = { allow: 'FORWARDED', deny: 'DROPPED', dropped: 'DROPPED', log: 'AUDIT' } as const;

interface HubbleEndpoint {
  namespace?: string;
  pod_name?: string;
  labels: string[];
}

function hubbleEndpoint(peer: FlowPeer | undefined): HubbleEndpoint {
  // Hubble's identity for an address outside the cluster.
  if (!peer) return { labels: ['reserved:world'] };
  return {
    namespace: peer.namespace,
    pod_name: peer.name,
    labels: Object.entries(peer.labels).map(([k, v]) => `k8s:${k}=${v}`),
  };
}

function ipVersion(f: Flow): 'IPv4' | 'IPv6' {
  return parseAddress(f.src)?.family === 6 ? 'IPv6' : 'IPv4';
}

function hubbleL4(f: Flow): Record<string, unknown> {
  const ports = { source_port: f.sport, destination_port: f.dport };
  switch (f.protocol) {
    case 'TCP':
    case 'UDP':
    case 'SCTP':
      return { [f.protocol]: ports };
    case 'ICMP':
      return ipVersion(f) === 'IPv6' ? { ICMPv6: {} } : { ICMPv4: {} };
    default:
      return {};
  }
}

/** `NetworkPolicy shop/db-from-backend` or `GlobalPolicy protect-db` → Hubble's Policy. */
function hubblePolicy(label: string): { name: string; namespace?: string; kind: string } {
  const [kind = '', ref = ''] = label.split(' ');
  const slash = ref.indexOf('/');
  return slash < 0
    ? { name: ref, kind }
    : { namespace: ref.slice(0, slash), name: ref.slice(slash + 1), kind };
}

/**
 * A record as `hubble observe -o jsonpb` prints a flow (GetFlowsResponse, proto field names), as
 * far as the fields map; what Hubble has no field for (the deciding rule, the aggregate's counts)
 * is in `switchyard`.
 */
export function hubbleFlow(f: Flow): Record<string, unknown> {
  const direction = f.direction === 'ingress' ? 'INGRESS' : 'EGRESS';
  const policy = f.policy ? [hubblePolicy(f.policy)] : [];
  const decided = `${f.direction}_${f.verdict === 'deny' ? 'denied' : 'allowed'}_by`;
  return {
    flow: {
      time: f.lastSeen,
      verdict: HUBBLE_VERDICT[f.verdict],
      ...(f.verdict === 'deny' ? { drop_reason_desc: 'POLICY_DENIED' } : {}),
      ...(f.verdict === 'dropped' && f.dropReason ? { drop_reason_desc: f.dropReason } : {}),
      IP: {
        source: f.src,
        destination: f.dst,
        ipVersion: ipVersion(f),
      },
      l4: hubbleL4(f),
      source: hubbleEndpoint(f.source),
      destination: hubbleEndpoint(f.destination),
      Type: 'L3_L4',
      node_name: f.node,
      traffic_direction: direction,
      ...(policy.length ? { [decided]: policy } : {}),
    },
    node_name: f.node,
    time: f.lastSeen,
    switchyard: {
      rule: f.rule,
      ...(f.endpoint ? { endpoint: f.endpoint } : {}),
      firstSeen: f.firstSeen,
      connections: f.connections,
      packets: f.packets,
      bytes: f.bytes,
      ...(f.process ? { process: f.process } : {}),
      ...(f.destinationProcess ? { destinationProcess: f.destinationProcess } : {}),
      ...(f.dropFunction ? { dropFunction: f.dropFunction } : {}),
    },
  };
}
