/**
 * Addresses → the pods that own them, from the whole desired state (every node's pods), so a
 * record on one node names the peer on another: the flow table resolves both ends of every flow.
 */
import type { Endpoint, IR } from '../ir/types.js';
import type { FlowPeer } from './flow-types.js';

const byEndpoints = new WeakMap<IR['endpoints'], ReadonlyMap<string, Endpoint>>();

/**
 * Address → the IR's own endpoint that has it, one map for each endpoint list an IR holds (an
 * incremental IR hands the same list while no endpoint changes). The peer directory and the drop
 * tracer both look pods up by address: one map of 10k entries between them, not one each (0.44
 * MiB at 10k pods).
 */
export function endpointsByAddress(ir: IR | undefined): ReadonlyMap<string, Endpoint> {
  const endpoints = ir?.endpoints;
  if (!endpoints) return new Map();
  let index = byEndpoints.get(endpoints);
  if (!index) {
    const made = new Map<string, Endpoint>();
    for (const e of endpoints) for (const a of e.addresses) made.set(a, e);
    byEndpoints.set(endpoints, made);
    index = made;
  }
  return index;
}

export class PeerDirectory {
  /**
   * The IR's own endpoint objects, shared with it: a peer is made when a flow is shown, not kept
   * for each of the 10k endpoints an agent knows at 10k pods (0.5 MiB of copies).
   */
  private readonly byAddress: ReadonlyMap<string, Endpoint>;

  constructor(ir: IR | undefined) {
    this.byAddress = endpointsByAddress(ir);
  }

  /** The pod with this address, if one has it. */
  peerOf(address: string): FlowPeer | undefined {
    const e = this.byAddress.get(address);
    return e && { pod: e.id, namespace: e.namespace, name: e.name, labels: e.labels };
  }
}
