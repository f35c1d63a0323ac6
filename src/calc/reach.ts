import type { IR, Protocol } from '../ir/types.js';
import type { ReachMatrix, ReachOutcome } from './api.js';
import { Oracle } from './evaluate.js';
import { servesPort } from './serving.js';

/**
 * The pod×pod matrix of new connections to `port`/`protocol`: `denied` when policy drops the
 * connection (the evaluator), else `unserved` when the destination does not serve the port, else
 * `allowed`. Policy comes first because a dropped SYN never reaches the listener, so a lab
 * measures a denied, unserved pair as denied (a timeout), not as refused.
 */
/**
 * The predicted pod×pod matrix, between the pods' IPv4 addresses (`family` 4, the default) or
 * IPv6 ones (6). A pod without an address of the family reaches nothing and is reached by nothing.
 */
/** The endpoint's address of `family`, if it has one. */
export function familyAddress(e: { addresses: readonly string[] }, family: 4 | 6): string | undefined {
  return e.addresses.find((a) => a.includes(':') === (family === 6));
}

export function reachMatrix(ir: IR, port: number, protocol: Protocol, family?: 4 | 6): ReachMatrix {
  const oracle = new Oracle(ir);
  const results: ReachMatrix['results'] = {};
  const outcomes: ReachMatrix['outcomes'] = {};
  for (const src of ir.endpoints) {
    const row: Record<string, ReachOutcome> = {};
    for (const dst of ir.endpoints) {
      const srcAddr = family === undefined ? src.addresses[0] : familyAddress(src, family);
      const dstAddr = family === undefined ? dst.addresses[0] : familyAddress(dst, family);
      const allowed =
        srcAddr !== undefined &&
        dstAddr !== undefined &&
        oracle.evaluate({ src: srcAddr, dst: dstAddr, protocol, dport: port }).allowed;
      row[dst.id] = !allowed ? 'denied' : servesPort(dst, port, protocol) ? 'allowed' : 'unserved';
    }
    outcomes[src.id] = row;
    results[src.id] = Object.fromEntries(Object.entries(row).map(([d, o]) => [d, o === 'allowed']));
  }
  return { port, protocol, results, outcomes };
}
