/**
 * The nodeport bench's outside client: a namespace outside the cluster, on the lab's fabric,
 * routed to the node's external address, so traffic enters the node through its fabric link as
 * from a NIC. Named `sy-<lab>-bout`, so `lab down` removes it with the lab.
 *
 * The lab's own outside client when it has one; else (a lab without an outside) one made here,
 * and the node gets its external address on the fabric link and a route back to the outside range.
 */
import type { LabState } from '../../../lab/index.js';
import { FABRIC_BRIDGE, NODE_FABRIC_INTERFACE } from '../../../lab/names.js';
import { createNetns, ipBatch, listNetns } from '../../../netns/index.js';
import type { OutsideClient } from './nodeport-lab.js';

/** Outside clients' range (the address plan), and this bench's client in it. */
const OUTSIDE_RANGE = '198.19.129.0/24';
const OUTSIDE_ADDRESS = '198.19.129.250';
const EXTERNAL_RANGE = '198.19.128.0/24';
/** The fabric's end of the outside client's link. */
const FABRIC_END = 'bout0';

/** The lab's own outside client (`client`), in labs that have an outside (see docs/lab.md). */
function labOutside(state: LabState): OutsideClient | undefined {
  const t = state.topology as { outside?: readonly (OutsideClient & { name: string })[] } | undefined;
  const client = t?.outside?.find((o) => o.name === 'client');
  return client && { netns: client.netns, address: client.address };
}

export async function outsideClient(state: LabState): Promise<OutsideClient> {
  const own = labOutside(state);
  if (own) return own;
  const netns = `sy-${state.name}-bout`;
  const topology = state.topology;
  if (!topology) throw new Error(`bench lab ${state.name} has no topology`);
  if (!listNetns().includes(netns)) {
    await createNetns([netns]);
    await ipBatch(
      [
        `link add ${FABRIC_END} type veth peer name eth0 netns ${netns}`,
        `link set ${FABRIC_END} addrgenmode none`,
        `link set ${FABRIC_END} master ${FABRIC_BRIDGE}`,
        `link set ${FABRIC_END} up`,
      ],
      { netns: topology.fabricNetns },
    );
    await ipBatch(
      [
        'link set lo up',
        'link set eth0 addrgenmode none',
        `addr add ${OUTSIDE_ADDRESS}/24 dev eth0`,
        'link set eth0 up',
        `route add ${EXTERNAL_RANGE} dev eth0`,
      ],
      { netns },
    );
  }
  for (const node of topology.nodes) {
    const external = state.ir.nodes.find((n) => n.name === node.name)?.externalAddress;
    await ipBatch(
      [
        ...(external ? [`addr replace ${external}/32 dev ${NODE_FABRIC_INTERFACE}`] : []),
        `route replace ${OUTSIDE_RANGE} dev ${NODE_FABRIC_INTERFACE}`,
      ],
      { netns: node.netns },
    );
  }
  return { netns, address: OUTSIDE_ADDRESS };
}
