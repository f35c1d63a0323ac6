import { performance } from 'node:perf_hooks';
import { Assembler, BpfMap, codecs, Program, XdpAction, type Codec } from '../../bpf/index.js';
import { summarize, upperMedian } from '../stats.js';
import type { BenchRow } from '../results.js';
import type { BenchContext, BenchScenario } from '../types.js';

/**
 * How fast Node can drive BPF maps through bpf(2): single-element calls against the batch
 * commands, for the two map kinds policy uses most (hash for exact matches, LPM trie for CIDRs).
 * Rows are operations per second; the last row is the PROG_TEST_RUN rate of an empty XDP program,
 * the per-packet baseline generated programs are later compared with.
 */

type Mode = 'single' | 'batch';

interface MapCase<K> {
  backend: string;
  create(maxEntries: number): BpfMap<K, number>;
  keys(count: number): K[];
}

const hashCase: MapCase<number> = {
  backend: 'hash',
  create: (maxEntries) =>
    BpfMap.create({ type: 'hash', name: 'bench_hash', key: codecs.u32, value: codecs.u32, maxEntries }),
  keys: (count) => Array.from({ length: count }, (_, i) => i * 7919),
};

const lpmCase: MapCase<string> = {
  backend: 'lpm-trie',
  create: (maxEntries) =>
    BpfMap.create({
      type: 'lpm_trie',
      name: 'bench_lpm',
      key: codecs.ipv4LpmKey as Codec<string>,
      value: codecs.u32,
      maxEntries,
    }),
  // Distinct /32s spread over 198.18.0.0/15 (an odd multiplier permutes 2^17 addresses), as a
  // prefilter deny list would hold them.
  keys: (count) =>
    Array.from({ length: count }, (_, i) => {
      const n = (0xc612_0000 + ((i * 2654435761) % 0x2_0000)) >>> 0;
      return `${n >>> 24}.${(n >>> 16) & 0xff}.${(n >>> 8) & 0xff}.${n & 0xff}/32`;
    }),
};

function rate(operations: number, startedAt: number): number {
  return operations / ((performance.now() - startedAt) / 1000);
}

function measureMap<K>(
  mapCase: MapCase<K>,
  entries: number,
  repetitions: number,
  ctx: BenchContext,
): BenchRow[] {
  const keys = [...new Set(mapCase.keys(entries))];
  const samples: Record<`${'update' | 'lookup'}:${Mode}`, number[]> = {
    'update:single': [],
    'update:batch': [],
    'lookup:single': [],
    'lookup:batch': [],
  };
  for (let rep = 0; rep < repetitions; rep++) {
    const map = mapCase.create(keys.length);
    try {
      let start = performance.now();
      for (let i = 0; i < keys.length; i++) map.update(keys[i] as K, i);
      samples['update:single'].push(rate(keys.length, start));

      start = performance.now();
      let found = 0;
      for (const key of keys) if (map.lookup(key) !== undefined) found++;
      samples['lookup:single'].push(rate(keys.length, start));
      if (found !== keys.length)
        throw new Error(`${mapCase.backend}: ${found}/${keys.length} keys found after update`);

      map.clear();
      start = performance.now();
      map.updateBatch(keys.map((key, i) => [key, i] as const));
      samples['update:batch'].push(rate(keys.length, start));

      start = performance.now();
      const read = map.lookupBatch(4096).length;
      samples['lookup:batch'].push(rate(read, start));
      if (read !== keys.length)
        throw new Error(`${mapCase.backend}: batch lookup read ${read}/${keys.length}`);
    } finally {
      map.close();
    }
    ctx.progress.tick(`${mapCase.backend} ${rep + 1}/${repetitions}`);
  }
  return Object.entries(samples).map(([key, values]) => {
    const [op = '', mode = ''] = key.split(':');
    return summarize(mapCase.backend, { op, mode, entries: keys.length }, values);
  });
}

/**
 * Rate of an empty XDP program under PROG_TEST_RUN. The row uses the kernel's own per-run time,
 * which leaves out time the test thread spent preempted (this matters on a busy host); the wall
 * clock figure goes into the notes.
 */
function measureEmptyXdp(
  repeat: number,
  repetitions: number,
  ctx: BenchContext,
): { row: BenchRow; kernelNs: number[]; wallNs: number[] } {
  const program = Program.load({
    name: 'bench_empty',
    type: 'xdp',
    instructions: new Assembler().exitWith(XdpAction.PASS).assemble(),
  });
  const packet = Buffer.alloc(64);
  const kernelNs: number[] = [];
  const wallNs: number[] = [];
  try {
    program.testRun({ data: packet, repeat: 1000 });
    for (let rep = 0; rep < repetitions; rep++) {
      const start = performance.now();
      const result = program.testRun({ data: packet, repeat });
      const perRunNs = ((performance.now() - start) * 1e6) / repeat;
      wallNs.push(perRunNs);
      // The kernel reports whole nanoseconds; below 1 ns only the wall clock can tell.
      kernelNs.push(result.durationNs > 0 ? result.durationNs : perRunNs);
      ctx.progress.tick(`xdp-empty ${rep + 1}/${repetitions}`);
    }
  } finally {
    program.close();
  }
  const row = summarize(
    'xdp-empty',
    { op: 'prog_test_run', mode: `repeat=${repeat}` },
    kernelNs.map((ns) => 1e9 / ns),
  );
  return { row, kernelNs, wallNs };
}

export const scenario: BenchScenario = {
  name: 'bpf-maps',
  description:
    'BPF map update/lookup rates from Node (single vs batch, hash vs LPM trie) and an empty XDP program under PROG_TEST_RUN',
  async run(ctx) {
    const entries = ctx.quick ? 20_000 : 100_000;
    const repetitions = ctx.quick ? 3 : 7;
    const repeat = ctx.quick ? 1_000_000 : 5_000_000;
    ctx.progress.total(repetitions * 3);
    const rows = [
      ...measureMap(hashCase, entries, repetitions, ctx),
      ...measureMap(lpmCase, entries, repetitions, ctx),
    ];
    const xdp = measureEmptyXdp(repeat, repetitions, ctx);
    rows.push(xdp.row);
    return {
      name: 'bpf-maps',
      unit: 'ops/s',
      better: 'higher',
      rows,
      notes: [
        `empty XDP program under BPF_PROG_TEST_RUN: ${upperMedian(xdp.kernelNs).toFixed(1)} ns/packet as the kernel measures it (${upperMedian(xdp.wallNs).toFixed(1)} ns by the wall clock over repeat=${repeat}) — the baseline for generated programs`,
        'single = one bpf(2) call per element through koffi; batch = BPF_MAP_UPDATE_BATCH / BPF_MAP_LOOKUP_BATCH (4096 per call); lookup batch reads the whole map',
      ],
    };
  },
};
