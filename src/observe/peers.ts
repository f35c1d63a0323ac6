/**
 * Addresses → the pods that own them, from the whole desired state (every node's pods), so a
 * record on one node names the peer on another: the flow table resolves both ends of every flow.
 */
import type { IR } from '../ir/types.js';
import type { FlowPeer } from './flow-types.js';

export class PeerDirectory {
  private readonly byAddress = new Map<string, FlowPeer>();

  constructor(ir: IR | undefined) {
    for (const e of ir?.endpoints ?? []) {
      const peer: FlowPeer = { pod: e.id, namespace: e.namespace, name: e.name, labels: e.labels };
      for (const a of e.addresses) this.byAddress.set(a, peer);
    }
  }

  /** The pod with this address, if one has it. */
  peerOf(address: string): FlowPeer | undefined {
    return this.byAddress.get(address);
  }
}
