/**
 * How many IP-set membership changes per second each mechanism absorbs, into a set that already
 * holds `size` members: ipset (hash:net, the iptables backend's sets), an nft interval set (the
 * nftables backend's) and the LPM trie the eBPF backend keeps every set in. Each sample adds K
 * new members and deletes them again, so the set is back at `size` for the next one; updates/s
 * counts both halves. `batch` is one tool run (ipset restore, nft -f) or one batch syscall series
 * per half; `single` is one tool run, or one bpf(2) call, per member.
 */
import { performance } from 'node:perf_hooks';
import { BpfMap } from '../../bpf/index.js';
import { runInNetnsOrThrow } from '../../dataplane/exec.js';
import { cidr16 } from '../../dataplane/ebpf/addr16.js';
import { MAP } from '../../dataplane/ebpf/layout.js';
import { MAP_SPECS } from '../../dataplane/ebpf/maps.js';
import { summarize } from '../stats.js';
import type { BenchRow, BenchScenarioResult } from '../results.js';
import type { BenchContext, BenchScenario } from '../types.js';
import { distinctAddresses } from './support/cidrs.js';
import { BenchNetns, benchTag } from './support/netns.js';

export interface SetUpdateOptions {
  /** Members already in the set (the advisor reads `size`). */
  sizes: readonly number[];
  /** Members added (then deleted) per batch sample. */
  batch: number;
  /** Members added (then deleted) one tool run at a time per single sample: process start-ups dominate. */
  singleTool: number;
  /** Members per single-syscall sample on the BPF map. */
  singleMap: number;
  repetitions: number;
}

export function setUpdateOptions(quick: boolean): SetUpdateOptions {
  // K stays at 100 for every backend: nft 1.0.6 deletes interval-set elements in O(set size)
  // each (~0.2 s apiece at 100k members), so larger batches would take minutes per sample there.
  return quick
    ? { sizes: [10_000], batch: 100, singleTool: 5, singleMap: 1000, repetitions: 5 }
    : { sizes: [1000, 100_000], batch: 100, singleTool: 3, singleMap: 5000, repetitions: 5 };
}

const IPSET = 'sy-bench-upd';
const NFT_TABLE = 'inet switchyard';
const NFT_SET = 'bench_upd';
/** The eBPF backend's set trie key carries a set index; any fixed index stands for one set. */
const SET_INDEX = 7;

type Mode = 'batch' | 'single';

interface Mechanism {
  backend: string;
  /**
   * Runs in this process (warm it up before timing; a single change is one syscall, so a sample
   * takes many), rather than as a tool process per change.
   */
  inProcess: boolean;
  /** Creates the set holding `members`. */
  fill(members: readonly string[]): Promise<void>;
  add(addresses: readonly string[], mode: Mode): Promise<void>;
  remove(addresses: readonly string[], mode: Mode): Promise<void>;
  /** Members now in the set, to prove the updates landed. */
  count(): Promise<number>;
  drop(): Promise<void>;
}

function ipsetMechanism(netns: string): Mechanism {
  const run = (args: string[], input?: string): Promise<unknown> =>
    runInNetnsOrThrow(netns, 'ipset', args, input);
  const lines = (verb: string, addresses: readonly string[]): string =>
    addresses.map((a) => `${verb} ${IPSET} ${a}/32`).join('\n') + '\n';
  return {
    backend: 'iptables',
    inProcess: false,
    async fill(members) {
      const maxelem = Math.max(65_536, 2 ** Math.ceil(Math.log2(members.length * 2)));
      await run(['destroy', IPSET]).catch(() => undefined);
      await run(
        ['restore'],
        `create ${IPSET} hash:net family inet maxelem ${maxelem}\n${lines('add', members)}`,
      );
    },
    async add(addresses, mode) {
      if (mode === 'batch') await run(['restore'], lines('add', addresses));
      else for (const a of addresses) await run(['add', IPSET, `${a}/32`]);
    },
    async remove(addresses, mode) {
      if (mode === 'batch') await run(['restore'], lines('del', addresses));
      else for (const a of addresses) await run(['del', IPSET, `${a}/32`]);
    },
    async count() {
      const out = await runInNetnsOrThrow(netns, 'ipset', ['list', IPSET, '-t']);
      return Number(/Number of entries: (\d+)/.exec(out.stdout)?.[1] ?? Number.NaN);
    },
    async drop() {
      await run(['destroy', IPSET]).catch(() => undefined);
    },
  };
}

function nftMechanism(netns: string): Mechanism {
  const run = (args: string[], input?: string): Promise<unknown> =>
    runInNetnsOrThrow(netns, 'nft', args, input);
  const elements = (verb: string, addresses: readonly string[]): string =>
    `${verb} element ${NFT_TABLE} ${NFT_SET} { ${addresses.join(', ')} }\n`;
  return {
    backend: 'nftables',
    inProcess: false,
    async fill(members) {
      await run(
        ['-f', '-'],
        `add table ${NFT_TABLE}\ndelete table ${NFT_TABLE}\nadd table ${NFT_TABLE}\n` +
          `add set ${NFT_TABLE} ${NFT_SET} { type ipv4_addr; flags interval; }\n` +
          elements('add', members),
      );
    },
    async add(addresses, mode) {
      if (mode === 'batch') await run(['-f', '-'], elements('add', addresses));
      else
        for (const a of addresses)
          await run(['add', 'element', ...NFT_TABLE.split(' '), NFT_SET, `{ ${a} }`]);
    },
    async remove(addresses, mode) {
      if (mode === 'batch') await run(['-f', '-'], elements('delete', addresses));
      else
        for (const a of addresses)
          await run(['delete', 'element', ...NFT_TABLE.split(' '), NFT_SET, `{ ${a} }`]);
    },
    async count() {
      const out = await runInNetnsOrThrow(netns, 'nft', [
        '-j',
        'list',
        'set',
        ...NFT_TABLE.split(' '),
        NFT_SET,
      ]);
      const parsed = JSON.parse(out.stdout) as { nftables: { set?: { elem?: unknown[] } }[] };
      return parsed.nftables.find((o) => o.set)?.set?.elem?.length ?? 0;
    },
    async drop() {
      await run(['delete', 'table', ...NFT_TABLE.split(' ')]).catch(() => undefined);
    },
  };
}

/** The eBPF backend's set trie shape: {prefixlen = 32 + len (of the 16-byte address), set index, address} → 1. */
function lpmMechanism(): Mechanism {
  const spec = MAP_SPECS[MAP.ipSets];
  let map: BpfMap<{ prefixlen: number; set: number; addr: string }, number> | undefined;
  const key = (addr: string): { prefixlen: number; set: number; addr: string } => {
    const host = cidr16(addr);
    return { prefixlen: 32 + host.prefixLength, set: SET_INDEX, addr: host.address };
  };
  const need = (): NonNullable<typeof map> => {
    if (!map) throw new Error('set trie not created');
    return map;
  };
  return {
    backend: 'ebpf',
    inProcess: true,
    async fill(members) {
      map?.close();
      map = BpfMap.create({
        type: spec.type,
        name: 'sy_bench_sets',
        key: spec.key,
        value: spec.value,
        maxEntries: spec.maxEntries,
      });
      map.updateBatch(members.map((m) => [key(m), 1] as const));
    },
    async add(addresses, mode) {
      const m = need();
      if (mode === 'batch') m.updateBatch(addresses.map((a) => [key(a), 1] as const));
      else for (const a of addresses) m.update(key(a), 1);
    },
    async remove(addresses, mode) {
      const m = need();
      if (mode === 'batch') m.deleteBatch(addresses.map(key));
      else for (const a of addresses) m.delete(key(a));
    },
    async count() {
      return need().lookupBatch(4096).length;
    },
    async drop() {
      map?.close();
      map = undefined;
    },
  };
}

async function measure(
  mech: Mechanism,
  size: number,
  mode: Mode,
  count: number,
  repetitions: number,
  ctx: BenchContext,
): Promise<BenchRow> {
  const fresh = distinctAddresses(count, size);
  // In-process updates get an untimed round first (JIT, map nodes); a tool is a fresh process
  // every time, and a round of nft on a 100k set costs tens of seconds.
  if (mech.inProcess) {
    await mech.add(fresh, mode);
    await mech.remove(fresh, mode);
  }
  const samples: number[] = [];
  for (let rep = 0; rep < repetitions; rep++) {
    const start = performance.now();
    await mech.add(fresh, mode);
    const addMs = performance.now() - start;
    if (rep === 0) {
      const n = await mech.count();
      if (n !== size + count)
        throw new Error(`${mech.backend}: ${n} members after adding ${count} to ${size}`);
    }
    const start2 = performance.now();
    await mech.remove(fresh, mode);
    samples.push((2 * count) / ((addMs + performance.now() - start2) / 1000));
    ctx.progress.tick(`${mech.backend} ${mode} ${size}`);
  }
  return summarize(mech.backend, { size, mode }, samples);
}

export async function runSetUpdate(ctx: BenchContext, opts: SetUpdateOptions): Promise<BenchScenarioResult> {
  const ns = new BenchNetns(benchTag('su'));
  const modes: Mode[] = ['batch', 'single'];
  ctx.progress.total(opts.sizes.length * 3 * modes.length * opts.repetitions);
  const rows: BenchRow[] = [];
  const fillMs: string[] = [];
  try {
    await ns.create(['sets']);
    const mechanisms = [ipsetMechanism(ns.name('sets')), nftMechanism(ns.name('sets')), lpmMechanism()];
    for (const size of opts.sizes) {
      const members = distinctAddresses(size);
      for (const mech of mechanisms) {
        const start = performance.now();
        await mech.fill(members);
        fillMs.push(`${mech.backend} ${size}: ${(performance.now() - start).toFixed(0)} ms`);
        try {
          // Batch first: the advisor compares the first row of each backend.
          for (const mode of modes) {
            const count = mode === 'batch' ? opts.batch : mech.inProcess ? opts.singleMap : opts.singleTool;
            rows.push(await measure(mech, size, mode, count, opts.repetitions, ctx));
          }
        } finally {
          await mech.drop();
        }
      }
    }
  } finally {
    await ns.destroy();
  }
  return {
    name: 'set-update',
    unit: 'updates/s',
    better: 'higher',
    rows,
    notes: [
      `each sample adds K new /32 members to a set of 'size' and deletes them again (updates = 2K); batch: K=${opts.batch} in one ipset restore / one nft -f per half, or BPF_MAP_UPDATE_BATCH/DELETE_BATCH on the trie`,
      `single: one process per member for ipset/nft (ipset add/del, nft add/delete element, each a process started in the namespace; K=${opts.singleTool}), one bpf(2) call per member for the trie (K=${opts.singleMap})`,
      "iptables = ipset hash:net; nftables = interval set in table inet switchyard; ebpf = the backend's set LPM trie ({prefixlen, set index, address}), from this process",
      'nft 1.0.6 fetches the whole set before any change and deletes interval elements with work proportional to the set size, so nftables rates fall with size, deletes far more than adds',
      'the iptables backend itself rebuilds a changed set (restore into -tmp, swap), so its real update cost grows with the set size: see netfilter-update for backend apply times',
      `filling the sets: ${fillMs.join(', ')}`,
    ],
  };
}

export const scenario: BenchScenario = {
  name: 'set-update',
  description:
    'IP-set membership updates per second: ipset, nft interval set, eBPF LPM trie (batch and single)',
  run: (ctx) => runSetUpdate(ctx, setUpdateOptions(ctx.quick)),
};
