import type { Endpoint, NamedPort, Protocol } from '../ir/types.js';

/**
 * Ports a pod accepts connections on: its declared containerPorts, or 80/TCP when it declares
 * none. The lab's probe servers listen on exactly these, and the predicted reach matrix counts a
 * pair as reachable only when policy allows it AND something answers.
 */
export function servedPorts(e: Endpoint): NamedPort[] {
  return e.ports.length > 0 ? e.ports : [{ port: 80, protocol: 'TCP' }];
}

export function servesPort(e: Endpoint, port: number, protocol: Protocol): boolean {
  return servedPorts(e).some((p) => p.port === port && p.protocol === protocol);
}
