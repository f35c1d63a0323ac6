/** A flow record as an agent serves it, for tests of what reads records (filters, output). */
import type { Flow, FlowPeer } from '../../src/observe/flows.js';

export function flowPeer(pod: string, labels: Record<string, string>): FlowPeer {
  const [namespace, name] = pod.split('/') as [string, string];
  return { pod, namespace, name, labels };
}

/** outside/client (198.18.0.2) denied by GlobalPolicy protect-db at shop/db (198.18.0.4:5432), on node-2. */
export function sampleFlow(over: Partial<Flow> = {}): Flow {
  return {
    key: 'deny|shop/db|ingress|6|198.18.0.2|0|198.18.0.4|5432|gp:protect-db/ingress/1',
    node: 'node-2',
    firstSeen: '2026-12-05T04:58:00.000Z',
    lastSeen: '2026-12-05T04:59:00.125Z',
    protocol: 'TCP',
    src: '198.18.0.2',
    sport: 0,
    dst: '198.18.0.4',
    dport: 5432,
    source: flowPeer('outside/client', { app: 'client' }),
    destination: flowPeer('shop/db', { app: 'db', tier: 'data' }),
    direction: 'ingress',
    endpoint: 'shop/db',
    verdict: 'deny',
    rule: 'gp:protect-db/ingress/1',
    policy: 'GlobalPolicy protect-db',
    packets: 2,
    bytes: 148,
    connections: 2,
    ...over,
  };
}
