/**
 * Issue 20's IR fields written straight into an IR built by calc: the nodes' external addresses,
 * each backend's node, and per service port its node port, load-balancer addresses and traffic
 * policies. Lets the backends' tests exercise traffic from outside whatever calc fills in itself.
 */
import type { IR, ServicePortTable } from '../../src/ir/types.js';

export type ExposedFields = Pick<
  ServicePortTable,
  'nodePort' | 'loadBalancerIPs' | 'externalTrafficPolicy' | 'internalTrafficPolicy'
>;

export function exposeIR(
  ir: IR,
  external: Readonly<Record<string, string>>,
  fields: Readonly<Record<string, ExposedFields>>,
): IR {
  const nodeOf = new Map(ir.endpoints.map((e) => [e.id, e.node]));
  return {
    ...ir,
    nodes: ir.nodes.map((n) => {
      const address = external[n.name];
      return address ? { ...n, externalAddress: address } : n;
    }),
    services: ir.services.map((t) => ({
      ...t,
      ...fields[t.id],
      backends: t.backends.map((b) => {
        const node = nodeOf.get(b.endpoint);
        return node ? { ...b, node } : b;
      }),
    })),
  };
}
