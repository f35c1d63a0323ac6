/**
 * Expected-reachability builder mirroring the upstream Kubernetes netpol e2e helpers
 * (test/e2e/network/netpol/reachability.go and truthtable.go), so scenarios transcribed from
 * upstream keep the exact shape of their `reachability.Expect…` calls. Shared by the unit tests
 * (reference evaluator) and, later, kernel tests (real packets).
 *
 * A table is `table[from][to]` over a fixed, ordered pod list ("ns/pod" strings).
 *
 * Edits (applied in order on a table filled with `default`):
 * - expectPeer {from: PeerSpec, to: PeerSpec, value}: Reachability.ExpectPeer — every (from, to)
 *   pair whose pods match the two peers. A PeerSpec field left out matches anything (upstream
 *   Peer{Namespace: "", Pod: ""}); `{}` is every pod.
 * - expect {from: "ns/pod", to: "ns/pod", value}: Reachability.Expect — one pair.
 * - expectAllIngress {pod, value}: Reachability.ExpectAllIngress — the pod's column (every source,
 *   itself included).
 * - expectAllEgress {pod, value}: Reachability.ExpectAllEgress — the pod's row (every destination,
 *   itself included).
 * - allowLoopback: Reachability.AllowLoopback — every self pair back to true. Switchyard always
 *   allows a pod to reach itself (the packet never leaves the pod's network namespace); upstream
 *   ignores loopback results (ignoreLoopback = true) instead, so transcribed cases whose upstream
 *   edits leave a self pair false end with this edit.
 *
 * An edit naming a pod that is not in the list throws, like upstream's TruthTable.Set Failf.
 */

export interface PeerSpec {
  ns?: string;
  pod?: string;
}

export type ReachEdit =
  | { op: 'expectPeer'; from: PeerSpec; to: PeerSpec; value: boolean }
  | { op: 'expect'; from: string; to: string; value: boolean }
  | { op: 'expectAllIngress'; pod: string; value: boolean }
  | { op: 'expectAllEgress'; pod: string; value: boolean }
  | { op: 'allowLoopback' };

export interface Expectation {
  /** NewReachability(pods, default). */
  default: boolean;
  edits: ReachEdit[];
}

/** table[from][to] */
export type TruthTable = Record<string, Record<string, boolean>>;

/** The upstream model's pods, in upstream order (AllPodStrings). */
export const XYZ_PODS: readonly string[] = ['x', 'y', 'z'].flatMap((ns) =>
  ['a', 'b', 'c'].map((p) => `${ns}/${p}`),
);

function splitPod(pod: string): { ns: string; pod: string } {
  const parts = pod.split('/');
  if (parts.length !== 2 || !parts[0] || !parts[1]) throw new Error(`expected ns/pod, found '${pod}'`);
  return { ns: parts[0], pod: parts[1] };
}

/** Peer.Matches: an empty field matches anything. */
export function peerMatches(peer: PeerSpec, pod: string): boolean {
  const p = splitPod(pod);
  return (
    (peer.ns === undefined || peer.ns === '' || peer.ns === p.ns) &&
    (peer.pod === undefined || peer.pod === '' || peer.pod === p.pod)
  );
}

export function newTable(pods: readonly string[], value: boolean): TruthTable {
  const table: TruthTable = {};
  for (const from of pods) {
    const row: Record<string, boolean> = {};
    for (const to of pods) row[to] = value;
    table[from] = row;
  }
  return table;
}

function set(table: TruthTable, from: string, to: string, value: boolean): void {
  const row = table[from];
  if (!row) throw new Error(`from-key ${from} not found`);
  if (!(to in row)) throw new Error(`to-key ${to} not allowed`);
  row[to] = value;
}

/** Builds the expected table: `default` everywhere, then every edit in order. */
export function applyEdits(pods: readonly string[], expectation: Expectation): TruthTable {
  const table = newTable(pods, expectation.default);
  for (const edit of expectation.edits) {
    switch (edit.op) {
      case 'expectPeer':
        for (const from of pods) {
          if (!peerMatches(edit.from, from)) continue;
          for (const to of pods) if (peerMatches(edit.to, to)) set(table, from, to, edit.value);
        }
        break;
      case 'expect':
        set(table, edit.from, edit.to, edit.value);
        break;
      case 'expectAllIngress':
        if (!pods.includes(edit.pod)) throw new Error(`to-key ${edit.pod} not found`);
        for (const from of pods) set(table, from, edit.pod, edit.value);
        break;
      case 'expectAllEgress':
        if (!pods.includes(edit.pod)) throw new Error(`from-key ${edit.pod} not found`);
        for (const to of pods) set(table, edit.pod, to, edit.value);
        break;
      case 'allowLoopback':
        for (const pod of pods) set(table, pod, pod, true);
        break;
    }
  }
  return table;
}

/** TruthTable.PrettyPrint: '.' = connected, 'X' = blocked, '?' = no value. */
export function prettyPrint(pods: readonly string[], table: TruthTable, indent = ''): string {
  const lines = [indent + ['-', ...pods].join('\t')];
  for (const from of pods) {
    const marks = pods.map((to) => {
      const v = table[from]?.[to];
      return v === undefined ? '?' : v ? '.' : 'X';
    });
    lines.push(indent + [from, ...marks].join('\t'));
  }
  return lines.join('\n');
}

export interface Mismatch {
  from: string;
  to: string;
  expected: boolean;
  /** undefined when the observed table has no value for the pair. */
  observed: boolean | undefined;
}

/** Pairs where observed differs from expected (a missing observation counts as a difference). */
export function compareTables(
  pods: readonly string[],
  expected: TruthTable,
  observed: TruthTable,
): Mismatch[] {
  const out: Mismatch[] = [];
  for (const from of pods) {
    for (const to of pods) {
      const e = expected[from]?.[to];
      if (e === undefined) throw new Error(`expected table has no value for ${from} -> ${to}`);
      const o = observed[from]?.[to];
      if (o !== e) out.push({ from, to, expected: e, observed: o });
    }
  }
  return out;
}

/** TruthTable.Compare: true where the two tables agree. */
export function comparisonTable(
  pods: readonly string[],
  expected: TruthTable,
  observed: TruthTable,
): TruthTable {
  const table: TruthTable = {};
  for (const from of pods) {
    const row: Record<string, boolean> = {};
    for (const to of pods) row[to] = expected[from]?.[to] === observed[from]?.[to];
    table[from] = row;
  }
  return table;
}

const verdict = (v: boolean | undefined): string => (v === undefined ? 'missing' : v ? 'allow' : 'deny');

/** Upstream-style failure report: mismatching pairs, then expected / observed / comparison grids. */
export function formatReport(pods: readonly string[], expected: TruthTable, observed: TruthTable): string {
  const mismatches = compareTables(pods, expected, observed);
  const total = pods.length * pods.length;
  return [
    `reachability: correct:${total - mismatches.length}, incorrect:${mismatches.length}`,
    ...mismatches.map(
      (m) => `  ${m.from} -> ${m.to}: expected ${verdict(m.expected)}, got ${verdict(m.observed)}`,
    ),
    '',
    'expected:',
    prettyPrint(pods, expected, '  '),
    '',
    'observed:',
    prettyPrint(pods, observed, '  '),
    '',
    'comparison (X = mismatch):',
    prettyPrint(pods, comparisonTable(pods, expected, observed), '  '),
  ].join('\n');
}
