/**
 * The chaos test's tampers: what a hostile or careless root user does to a node's dataplane
 * behind the agent's back, on each backend, and how to tell from the kernel whether it is still
 * there. Each opens a denied pair (client D → server S, where client A is allowed to S): rule and
 * hook removals open every pod of the node, set and map updates put D among the peers A is
 * allowed as.
 */
import { loadBackend } from '../../src/dataplane/registry.js';
import type { BackendName, NodeTarget } from '../../src/dataplane/backend.js';
import { runInNetns, runInNetnsOrThrow } from '../../src/dataplane/exec.js';
import { BpfMap, codecs, Link, MapOfMaps } from '../../src/bpf/index.js';
import {
  MAP,
  setLpmKey,
  tablePeerKey,
  tableValue,
  type SetLpmKey,
  type TableValue,
} from '../../src/dataplane/ebpf/layout.js';
import { mapPinPath } from '../../src/dataplane/ebpf/maps.js';
import { readMeta } from '../../src/dataplane/ebpf/meta.js';
import { nodeDir, tcxLinkPin } from '../../src/dataplane/ebpf/paths.js';
import { peerKey } from '../../src/dataplane/ebpf/table-encoding.js';
import type { Endpoint } from '../../src/ir/types.js';

export interface TamperTarget {
  node: NodeTarget;
  /** The server whose ingress policy the tamper opens. */
  server: Endpoint;
  /** Address of a client the server allows. */
  allowed: string;
  /** Address of a client the server denies: the tamper lets it in. */
  denied: string;
}

export interface Tamper {
  kind: string;
  /** What was done, as a command line or sentence. */
  what: string;
  /** Reads the kernel: is the tamper still in force? */
  present(): Promise<boolean>;
  /** Takes the tamper back when nothing repaired it (so the run can go on); absent: restart the agent. */
  undo?(): Promise<void>;
}

type TamperFn = (t: TamperTarget) => Promise<Tamper | undefined>;

/**
 * Peer sets (not the flow sets) that hold `allowed` and not `denied`, from `ipset save`: adding
 * `denied` there changes the set; a set already holding both would make the tamper a no-op.
 */
async function ipsetsToWiden(netns: string, allowed: string, denied: string): Promise<string[]> {
  const saved = await runInNetnsOrThrow(netns, 'ipset', ['save']);
  const members = new Map<string, Set<string>>();
  for (const [op, set, member] of saved.stdout.split('\n').map((l) => l.split(' '))) {
    if (op !== 'add' || !set?.startsWith('sy-') || set.startsWith('sy-flow') || !member) continue;
    members.set(set, (members.get(set) ?? new Set()).add(member));
  }
  return [...members].filter(([, m]) => m.has(allowed) && !m.has(denied)).map(([set]) => set);
}

const ipsetAdd: TamperFn = async (t) => {
  const sets = await ipsetsToWiden(t.node.netns, t.allowed, t.denied);
  const inSet = async (set: string): Promise<boolean> =>
    (await runInNetns(t.node.netns, 'ipset', ['test', set, t.denied])).code === 0;
  let set: string | undefined;
  // A hash:net set may cover D with a wider prefix: only a set the kernel says lacks D will do.
  for (const candidate of sets) if (!set && !(await inSet(candidate))) set = candidate;
  if (!set) return undefined;
  await runInNetnsOrThrow(t.node.netns, 'ipset', ['add', set, t.denied, '-exist']);
  return {
    kind: 'ipset add',
    what: `ipset add ${set} ${t.denied}`,
    present: async () => (await runInNetns(t.node.netns, 'ipset', ['test', set, t.denied])).code === 0,
    undo: async () => void (await runInNetns(t.node.netns, 'ipset', ['del', set, t.denied, '-exist'])),
  };
};

/** The iptables FORWARD jump into our chains, as `iptables-save` prints it (nft flavour, the default). */
async function forwardJump(netns: string): Promise<string | undefined> {
  const saved = await runInNetnsOrThrow(netns, 'iptables-save', ['-t', 'filter']);
  return saved.stdout.split('\n').find((l) => l.startsWith('-A FORWARD ') && l.includes('-j SY-'));
}

const ruleDelete: TamperFn = async (t) => {
  const backend = await loadBackend('iptables');
  if (!(await forwardJump(t.node.netns))) return undefined;
  const what = await backend.tamper(t.node, t.server);
  return { kind: 'iptables rule delete', what, present: async () => !(await forwardJump(t.node.netns)) };
};

interface NftSet {
  set?: { name: string; type: unknown; elem?: unknown[] };
}

const nftElementAdd: TamperFn = async (t) => {
  const listed = await runInNetnsOrThrow(t.node.netns, 'nft', ['-j', 'list', 'table', 'inet', 'switchyard']);
  const items = (JSON.parse(listed.stdout) as { nftables: NftSet[] }).nftables;
  // Peer sets only (plain address sets; flow sets are concatenations) holding A and not D.
  const holds = (i: NftSet, address: string): boolean =>
    JSON.stringify(i.set?.elem ?? []).includes(JSON.stringify(address));
  const sets = items
    .filter((i) => i.set?.type === 'ipv4_addr' && holds(i, t.allowed) && !holds(i, t.denied))
    .map((i) => i.set?.name as string);
  const inSet = async (set: string): Promise<boolean> =>
    (await runInNetns(t.node.netns, 'nft', ['get', 'element', 'inet', 'switchyard', set, `{ ${t.denied} }`]))
      .code === 0;
  let set: string | undefined;
  // An interval set may cover D without naming it: only a set the kernel says lacks D will do.
  for (const candidate of sets) if (!set && !(await inSet(candidate))) set = candidate;
  if (!set) return undefined;
  const element = ['inet', 'switchyard', set, `{ ${t.denied} }`];
  await runInNetnsOrThrow(t.node.netns, 'nft', ['add', 'element', ...element]);
  return {
    kind: 'nft element add',
    what: `nft add element inet switchyard ${set} { ${t.denied} }`,
    present: async () => (await runInNetns(t.node.netns, 'nft', ['get', 'element', ...element])).code === 0,
    undo: async () => void (await runInNetns(t.node.netns, 'nft', ['delete', 'element', ...element])),
  };
};

const nftFlush: TamperFn = async (t) => {
  await runInNetnsOrThrow(t.node.netns, 'nft', ['flush', 'ruleset']);
  return {
    kind: 'nft flush ruleset',
    what: `nft flush ruleset   (in ${t.node.netns})`,
    present: async () => {
      const r = await runInNetns(t.node.netns, 'nft', ['list', 'chains', 'inet']);
      return !/table inet switchyard/.test(r.stdout);
    },
  };
};

/** The node's decision-table tries (table mode): hook index → trie, reopened from the pin. */
function withTables<T>(node: NodeTarget, fn: (tables: MapOfMaps<number>, indices: number[]) => T): T {
  const dir = nodeDir(node.scope, node.node);
  const tables = MapOfMaps.fromPin(mapPinPath(dir, MAP.tables), codecs.u32);
  try {
    return fn(tables, Object.values(readMeta(dir)?.alloc.tables ?? {}));
  } finally {
    tables.close();
  }
}

/** Entries the map tamper wrote: `original` undefined when the key was new. */
interface MapWrite {
  index: number;
  key: ReturnType<typeof peerKey>;
  original?: TableValue;
  classId: number;
}

/**
 * Gives D the peer class A has in every table where they differ: a new /32 entry when the trie
 * has room, else D's covering entry rewritten (tries are sized to their tables).
 */
const tableMapUpdate: TamperFn = async (t) => {
  const writes: MapWrite[] = [];
  const dKey = peerKey(`${t.denied}/32`);
  withTables(t.node, (tables, indices) => {
    for (const index of indices) {
      const trie = tables.openInner(index, tablePeerKey, tableValue);
      if (!trie) continue;
      try {
        const a = trie.lookup(peerKey(`${t.allowed}/32`));
        const d = trie.lookup(dKey);
        if (!a || d?.class === a.class) continue;
        try {
          trie.update(dKey, a);
          writes.push({ index, key: dKey, classId: a.class });
        } catch {
          const covering = [...trie.entries()]
            .filter(([k]) => k.kind === 0 && covers(k, t.denied))
            .sort(([x], [y]) => y.prefixlen - x.prefixlen)[0];
          if (!covering) continue;
          trie.update(covering[0], { ...covering[1], class: a.class });
          writes.push({ index, key: covering[0], original: covering[1], classId: a.class });
        }
      } finally {
        trie.close();
      }
    }
  });
  if (writes.length === 0) return undefined;
  return {
    kind: 'eBPF map update',
    what: `map update on ${writes.length} decision-table trie(s) of ${t.node.node}: ${t.denied} given the class of ${t.allowed}`,
    present: async () =>
      withTables(t.node, (tables) =>
        writes.some((w) => {
          const trie = tables.openInner(w.index, tablePeerKey, tableValue);
          if (!trie) return false;
          try {
            return trie.lookup(dKey)?.class === w.classId;
          } finally {
            trie.close();
          }
        }),
      ),
    undo: async () =>
      withTables(t.node, (tables) => {
        for (const w of writes) {
          const trie = tables.openInner(w.index, tablePeerKey, tableValue);
          if (!trie) continue;
          try {
            if (w.original) trie.update(w.key, w.original);
            else trie.delete(w.key);
          } finally {
            trie.close();
          }
        }
      }),
  };
};

/**
 * Walk mode: puts D into every IP set of the node's `ipsets` trie that holds A (a new
 * {set, D/32} entry), as `bpftool map update pinned …/maps/ipsets` would.
 */
const setMapUpdate: TamperFn = async (t) => {
  const path = mapPinPath(nodeDir(t.node.scope, t.node.node), MAP.ipSets);
  const withSets = <T>(fn: (m: BpfMap<SetLpmKey, number>) => T): T => {
    const m = BpfMap.fromPin(path, setLpmKey, codecs.u32);
    try {
      return fn(m);
    } finally {
      m.close();
    }
  };
  const key = (set: number): SetLpmKey => ({ prefixlen: 64, set, addr: t.denied });
  const added = withSets((m) => {
    const sets = new Set(
      [...m.keys()]
        .filter((k) => covers({ prefixlen: k.prefixlen, addr: k.addr }, t.allowed))
        .map((k) => k.set),
    );
    const out = [...sets].filter((set) => m.lookup(key(set)) === undefined);
    for (const set of out) m.update(key(set), 1);
    return out;
  });
  if (added.length === 0) return undefined;
  return {
    kind: 'eBPF map update',
    what: `map update pinned ${path}: ${t.denied} added to set(s) ${added.join(',')} (those holding ${t.allowed})`,
    present: async () => withSets((m) => added.some((set) => m.lookup(key(set)) !== undefined)),
    undo: async () => withSets((m) => void added.forEach((set) => m.delete(key(set)))),
  };
};

const mapUpdate: TamperFn = async (t) => (await setMapUpdate(t)) ?? (await tableMapUpdate(t));

function covers(key: { prefixlen: number; addr: string }, address: string): boolean {
  const bits = key.prefixlen - 32;
  if (bits <= 0) return true;
  const toInt = (a: string): number => a.split('.').reduce((n, o) => n * 256 + Number(o), 0);
  const mask = bits >= 32 ? 0xffffffff : (0xffffffff << (32 - bits)) >>> 0;
  return (toInt(key.addr) & mask) >>> 0 === (toInt(address) & mask) >>> 0;
}

function linkAttached(pin: string): boolean {
  try {
    const link = Link.fromPin(pin);
    try {
      return (link.info().ifindex ?? 0) !== 0;
    } finally {
      link.close();
    }
  } catch {
    return false;
  }
}

const linkDetach: TamperFn = async (t) => {
  const backend = await loadBackend('ebpf');
  const pin = tcxLinkPin(nodeDir(t.node.scope, t.node.node), t.server.hostInterface, 'egress');
  if (!linkAttached(pin)) return undefined;
  const what = await backend.tamper(t.node, t.server);
  return { kind: 'eBPF link detach', what, present: async () => !linkAttached(pin) };
};

export const TAMPERS: Record<BackendName, readonly TamperFn[]> = {
  iptables: [ruleDelete, ipsetAdd],
  nftables: [nftFlush, nftElementAdd],
  ebpf: [mapUpdate, linkDetach],
};
