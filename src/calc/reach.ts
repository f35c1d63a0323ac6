import type { IR, Protocol } from '../ir/types.js';
import type { ReachMatrix } from './api.js';
import { Oracle } from './evaluate.js';
import { servesPort } from './serving.js';

/**
 * The pod×pod matrix of new connections to `port`/`protocol` that would be established: policy
 * allows them (the evaluator) and the destination serves the port.
 */
export function reachMatrix(ir: IR, port: number, protocol: Protocol): ReachMatrix {
  const oracle = new Oracle(ir);
  const results: ReachMatrix['results'] = {};
  for (const src of ir.endpoints) {
    const row: Record<string, boolean> = {};
    for (const dst of ir.endpoints) {
      const srcAddr = src.addresses[0];
      const dstAddr = dst.addresses[0];
      row[dst.id] =
        srcAddr !== undefined &&
        dstAddr !== undefined &&
        servesPort(dst, port, protocol) &&
        oracle.evaluate({ src: srcAddr, dst: dstAddr, protocol, dport: port }).allowed;
    }
    results[src.id] = row;
  }
  return { port, protocol, results };
}
