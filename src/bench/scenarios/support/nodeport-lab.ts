/**
 * The nodeport bench's lab: one node, a client pod and a backend pod, N services selecting the
 * backend pod (port 80 → nginx on 8080) and one more service, `local`, with
 * `externalTrafficPolicy: Local` (port 80 → nginx's peer-logging listener on 8081), whose
 * backend's access log shows the peer address the backend saw.
 *
 * Two ways in, with the same generator (wrk in a namespace and cgroup of its own):
 * - `nodeport`: an outside client (a namespace on the lab's fabric, outside the cluster) to the
 *   node's external address and the service's node port: traffic enters the node through its
 *   fabric link, as from a NIC. Services are type NodePort while the node-port range lasts
 *   (30000 + i, 2767 of them; 32767 is `local`'s), ClusterIP beyond: at 10k services the node
 *   also holds thousands of cluster IPs, which kube-proxy-style chains walk before the node ports.
 * - `clusterip`: the client pod to the service's cluster IP. The harness's path before NodePort
 *   services existed; kept as the comparison of the two entries.
 */
import type { LabState } from '../../../lab/index.js';
import type { Model } from '../../../model/index.js';
import { join } from 'node:path';
import { CGROUP_DIR } from '../../../lab/names.js';
import { cgroup2Mount, ensureCgroup } from '../../../netns/index.js';
import { middleService, vip } from '../services.js';
import { benchModel } from './manifests.js';
import type { PodPlace } from './native-load.js';

export type Entry = 'nodeport' | 'clusterip';

/** nginx's listener without a log (the measured load) and the one that logs peers. */
export const LOAD_PORT = 8080;
export const PEER_PORT = 8081;
export const SERVICE_PORT = 80;
export const FIRST_NODE_PORT = 30000;
/** `local`'s node port: the last of the range, so every service before it can have one. */
export const LOCAL_NODE_PORT = 32767;
/** Services that get a node port (30000 … 32766). */
export const NODE_PORT_SERVICES = LOCAL_NODE_PORT - FIRST_NODE_PORT;

export function nodePortOf(i: number): number | undefined {
  return i < NODE_PORT_SERVICES ? FIRST_NODE_PORT + i : undefined;
}

function serviceYaml(s: {
  name: string;
  clusterIP: string;
  targetPort: number;
  nodePort?: number;
  local?: boolean;
}): string {
  const type = s.nodePort === undefined ? '' : '  type: NodePort\n';
  const policy = s.local && s.nodePort !== undefined ? '  externalTrafficPolicy: Local\n' : '';
  const nodePort = s.nodePort === undefined ? '' : `, nodePort: ${s.nodePort}`;
  return (
    `apiVersion: v1\nkind: Service\nmetadata:\n  name: ${s.name}\n  namespace: b\nspec:\n${type}${policy}` +
    `  clusterIP: ${s.clusterIP}\n  selector: { app: server }\n` +
    `  ports: [{ port: ${SERVICE_PORT}, targetPort: ${s.targetPort}${nodePort}, protocol: TCP }]\n`
  );
}

/** The manifests of one point: N services named s<i> (as the services bench), plus `local`. */
export function nodePortModel(services: number, entry: Entry): Model {
  const nodePorts = entry === 'nodeport';
  const docs = [
    'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: b\n',
    // No declared ports: the lab's probe server leaves 8080 and 8081 to nginx.
    'apiVersion: v1\nkind: Pod\nmetadata:\n  name: client\n  namespace: b\n  labels: { app: client }\nspec:\n  containers: [{ name: c }]\n',
    'apiVersion: v1\nkind: Pod\nmetadata:\n  name: server\n  namespace: b\n  labels: { app: server }\nspec:\n  containers: [{ name: c }]\n',
    serviceYaml({
      name: 'local',
      clusterIP: vip(services),
      targetPort: PEER_PORT,
      nodePort: nodePorts ? LOCAL_NODE_PORT : undefined,
      local: true,
    }),
  ];
  for (let i = 0; i < services; i++)
    docs.push(
      serviceYaml({
        name: `s${i}`,
        clusterIP: vip(i),
        targetPort: LOAD_PORT,
        nodePort: nodePorts ? nodePortOf(i) : undefined,
      }),
    );
  return benchModel('nodeport bench', 'bench-nodeport.yaml', docs);
}

/** Where load goes: an address and port the client dials. */
export interface Target {
  address: string;
  port: number;
}

/** A namespace and cgroup to run the generator in, and the address it sends from. */
export interface ClientPlace extends PodPlace {
  address: string;
  /** What it is, for notes: `pod b/client`, `outside 198.19.129.1`. */
  what: string;
}

export interface EntryPlan {
  client: ClientPlace;
  /** The measured service (middle of the chain, see `middleService`). */
  load: Target;
  /** The `local` service, whose backend logs peers. */
  peers: Target;
}

export function podPlace(state: LabState, id: string): PodPlace & { address: string } {
  const p = state.topology?.pods.find((x) => x.id === id);
  if (!p) throw new Error(`bench lab ${state.name} has no pod ${id}`);
  return { netns: p.netns, cgroup: `${state.cgroupRoot}/${p.slug}`, address: p.address };
}

/** The outside client of a lab: its namespace and address. */
export interface OutsideClient {
  netns: string;
  address: string;
}

/**
 * The outside client's cgroup, for its CPU: `switchyard/<lab>-bout`, beside the lab's and not below
 * it, so the lab's cgroup socket hooks (eBPF's connect-time balancing) never see the client — from
 * outside, every packet must meet the node's own translation. The bench removes it; named like a
 * lab, so `lab down` of that name would too.
 */
export function outsideCgroup(lab: string): string {
  return join(cgroup2Mount(), CGROUP_DIR, `${lab}-bout`);
}

/**
 * The addresses and ports of one point. `outside` finds (or makes) the lab's outside client for
 * the nodeport entry; the node's external address is the lab's first node's.
 */
export async function entryPlan(
  state: LabState,
  services: number,
  entry: Entry,
  outside: (state: LabState) => Promise<OutsideClient>,
): Promise<EntryPlan> {
  const middle = middleService(Math.min(services, entry === 'nodeport' ? NODE_PORT_SERVICES : services));
  if (entry === 'clusterip') {
    const pod = podPlace(state, 'b/client');
    return {
      client: { ...pod, what: `pod b/client (${pod.address})` },
      load: { address: vip(middle), port: SERVICE_PORT },
      peers: { address: vip(services), port: SERVICE_PORT },
    };
  }
  const node = state.ir.nodes[0];
  if (!node?.externalAddress)
    throw new Error(`bench lab ${state.name}: node ${node?.name ?? '?'} has no external address`);
  const o = await outside(state);
  const cgroup = outsideCgroup(state.name);
  ensureCgroup(cgroup);
  return {
    client: { netns: o.netns, cgroup, address: o.address, what: `outside ${o.address}` },
    load: { address: node.externalAddress, port: nodePortOf(middle) as number },
    peers: { address: node.externalAddress, port: LOCAL_NODE_PORT },
  };
}
