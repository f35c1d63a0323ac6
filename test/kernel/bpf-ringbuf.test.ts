import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  Assembler,
  BpfMap,
  codecs,
  Program,
  R0,
  R1,
  R2,
  R3,
  R4,
  R10,
  RingBufMap,
  RingBufReader,
  XdpAction,
} from '../../src/bpf/index.js';
import { describeKernel } from '../support/kernel.js';

/**
 * Every run takes the next number from a counter (atomic fetch-add) and emits it as an 8-byte
 * ring buffer record; a failed output is counted in `lost` instead.
 */
function sequenceEmitter() {
  return new Assembler()
    .st('w', R10, -4, 0)
    .mov64(R2, R10)
    .add64(R2, -4)
    .ldMap(R1, 'sequence')
    .call('map_lookup_elem')
    .jeq(R0, 0, 'out')
    .mov64(R1, 1)
    .atomic('add', 'dw', R0, 0, R1, true) // r1 = old value
    .stx('dw', R10, -16, R1)
    .ldMap(R1, 'events')
    .mov64(R2, R10)
    .add64(R2, -16)
    .mov64(R3, 8)
    .mov64(R4, 0)
    .call('ringbuf_output')
    .jeq(R0, 0, 'out')
    .mov64(R2, R10)
    .add64(R2, -4)
    .ldMap(R1, 'lost')
    .call('map_lookup_elem')
    .jeq(R0, 0, 'out')
    .mov64(R1, 1)
    .atomicAdd('dw', R0, 0, R1)
    .label('out')
    .exitWith(XdpAction.PASS)
    .assemble();
}

describeKernel('bpf: ring buffer', () => {
  let sequence: BpfMap<number, number>;
  let lost: BpfMap<number, number>;
  let events: RingBufMap;
  let program: Program;

  beforeAll(() => {
    sequence = BpfMap.create({
      type: 'array',
      name: 'sequence',
      key: codecs.u32,
      value: codecs.u64n,
      maxEntries: 1,
    });
    lost = BpfMap.create({ type: 'array', name: 'lost', key: codecs.u32, value: codecs.u64n, maxEntries: 1 });
    // 4 MiB holds 262144 records of 16 bytes: 1M events only fit if the reader drains concurrently.
    events = RingBufMap.create({ name: 'events', size: 1 << 22 });
    program = Program.load({
      name: 'rb_sequence',
      type: 'xdp',
      instructions: sequenceEmitter(),
      maps: { sequence, lost, events },
    });
  });

  afterAll(() => {
    program?.close();
    events?.close();
    sequence?.close();
    lost?.close();
  });

  it('delivers 1M events to Node, each exactly once', async () => {
    const total = 1_000_000;
    const seen = new Uint8Array(total);
    let received = 0;
    let duplicates = 0;
    let outOfRange = 0;
    const reader = new RingBufReader(events);
    const started = performance.now();
    try {
      reader.start((data, offset, length) => {
        const n = length === 8 ? Number(data.readBigUInt64LE(offset)) : -1;
        if (n < 0 || n >= total) outOfRange++;
        else if (seen[n]) duplicates++;
        else seen[n] = 1;
        received++;
      });
      // Producers run on a koffi worker thread while the event loop drains the ring.
      const batch = 100_000;
      for (let done = 0; done < total; done += batch)
        await program.testRunAsync({ data: Buffer.alloc(64), repeat: batch });
      const deadline = performance.now() + 20_000;
      while (received < total && performance.now() < deadline)
        await new Promise((resolve) => setTimeout(resolve, 5));
    } finally {
      reader.close();
    }
    const elapsedMs = performance.now() - started;
    console.log(
      `ringbuf: ${received} events in ${elapsedMs.toFixed(0)} ms (${((received / elapsedMs) * 1000).toFixed(0)} events/s)`,
    );

    expect(lost.lookup(0)).toBe(0);
    expect(sequence.lookup(0)).toBe(total);
    expect({ received, duplicates, outOfRange }).toEqual({ received: total, duplicates: 0, outOfRange: 0 });
    expect(seen.every((flag) => flag === 1)).toBe(true);
  });

  it('consume() drains synchronously and reports what is pending', () => {
    const reader = new RingBufReader(events);
    try {
      for (let i = 0; i < 10; i++) program.testRun({ data: Buffer.alloc(64) });
      expect(reader.pending).toBe(10 * 16);
      const values: bigint[] = [];
      expect(reader.consumeDecoded(codecs.u64, (v) => values.push(v), 4)).toBe(4);
      expect(reader.consumeDecoded(codecs.u64, (v) => values.push(v))).toBe(6);
      expect(values).toEqual(Array.from({ length: 10 }, (_, i) => BigInt(1_000_000 + i)));
      expect(reader.pending).toBe(0);
    } finally {
      reader.close();
    }
  });
});
