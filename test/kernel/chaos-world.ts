/**
 * The chaos test's world: clients in namespace `cli`, servers in namespace `app` under a
 * default-deny ingress policy, and one allow policy per server naming which clients may connect
 * on TCP/80. A revision is the list of servers and, for each, its allowed clients; the oracle
 * (calc's reach matrix on the compiled IR) says what that revision allows.
 */
import { reachMatrix } from '../../src/calc/index.js';
import { compileIR, modelOf, namespace, networkPolicy, pod, type Manifest } from '../support/manifests.js';

export const CLIENTS = ['c0', 'c1', 'c2'] as const;
export const CLIENT_NS = 'cli';
export const SERVER_NS = 'app';
export const PORT = 80;

export interface Revision {
  /** Server pod names in `app`, in creation order. */
  servers: string[];
  /** server → the clients its allow policy names (possibly none). */
  allow: Record<string, string[]>;
}

/** `cli/c0→app/s1` */
export type Pair = string;

export function pairKey(client: string, server: string): Pair {
  return `${CLIENT_NS}/${client}→${SERVER_NS}/${server}`;
}

export function manifests(r: Revision): Manifest[] {
  return [
    namespace(CLIENT_NS, { team: CLIENT_NS }),
    namespace(SERVER_NS, { team: SERVER_NS }),
    ...CLIENTS.map((c) => pod(CLIENT_NS, c, { labels: { role: c } })),
    ...r.servers.map((s) => pod(SERVER_NS, s, { labels: { tier: 'srv', name: s } })),
    networkPolicy(SERVER_NS, 'default-deny', { podSelector: {}, policyTypes: ['Ingress'] }),
    ...r.servers.map((s) => {
      const clients = r.allow[s] ?? [];
      const ingress =
        clients.length === 0
          ? []
          : [
              {
                from: [
                  {
                    namespaceSelector: { matchLabels: { team: CLIENT_NS } },
                    podSelector: { matchExpressions: [{ key: 'role', operator: 'In', values: clients }] },
                  },
                ],
                ports: [{ port: PORT, protocol: 'TCP' }],
              },
            ];
      return networkPolicy(SERVER_NS, `allow-${s}`, {
        podSelector: { matchLabels: { name: s } },
        policyTypes: ['Ingress'],
        ingress,
      });
    }),
  ];
}

/**
 * The pairs (client → server) the oracle says a revision allows on TCP/80, computed from the
 * compiled IR exactly as `switchyard reach` does: policy allows and the server serves the port.
 */
export function allowedPairs(r: Revision): Set<Pair> {
  const ir = compileIR(modelOf(manifests(r)));
  const m = reachMatrix(ir, PORT, 'TCP');
  const out = new Set<Pair>();
  for (const c of CLIENTS) {
    for (const s of r.servers) {
      if (m.results[`${CLIENT_NS}/${c}`]?.[`${SERVER_NS}/${s}`] === true) out.add(pairKey(c, s));
    }
  }
  return out;
}

/** A small seeded generator (mulberry32): the same seed replays the same run. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Random allow lists: every server gets a random subset of the clients, and at least one server
 * has both an allowed and a denied client (so a tamper always has a denied pair to open next to
 * an allowed one).
 */
export function randomAllow(servers: readonly string[], rand: () => number): Record<string, string[]> {
  const allow: Record<string, string[]> = {};
  for (const s of servers) allow[s] = CLIENTS.filter(() => rand() < 0.5);
  const first = servers[0];
  if (first !== undefined) {
    const pick = Math.floor(rand() * CLIENTS.length);
    allow[first] = CLIENTS.filter((_, i) => i !== pick).filter((_, i) => i === 0 || rand() < 0.5);
  }
  return allow;
}
