/**
 * Addresses → the pods that own them, from the whole desired state (every node's pods), so a
 * record on one node names the peer on another: the flow table resolves both ends of every flow.
 */
import type { Endpoint, IR } from '../ir/types.js';
import type { FlowPeer } from './flow-types.js';

export class PeerDirectory {
  /**
   * The IR's own endpoint objects, shared with it: a peer is made when a flow is shown, not kept
   * for each of the 10k endpoints an agent knows at 10k pods (0.5 MiB of copies).
   */
  private readonly byAddress = new Map<string, Endpoint>();

  constructor(ir: IR | undefined) {
    for (const e of ir?.endpoints ?? []) for (const a of e.addresses) this.byAddress.set(a, e);
  }

  /** The pod with this address, if one has it. */
  peerOf(address: string): FlowPeer | undefined {
    const e = this.byAddress.get(address);
    return e && { pod: e.id, namespace: e.namespace, name: e.name, labels: e.labels };
  }
}
