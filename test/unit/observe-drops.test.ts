/**
 * Kernel drop reasons, the parts without a kernel: kallsyms resolution, the drop aggregates'
 * encoding and decoding, reason names from an enum, the kfree_skb format and struct layout
 * checks, and the flow table's `dropped` records.
 */
import { describe, expect, it } from 'vitest';
import { codecs, formatResolved, Kallsyms, parseKallsyms } from '../../src/bpf/index.js';
import type { KernelDropEvent } from '../../src/dataplane/events.js';
import {
  address16,
  dropKey,
  dropProgram,
  dropValue,
  kfreeSkbLayout,
  skbLayout,
  type DropKey,
} from '../../src/observe/drop-program.js';
import {
  dropReasonNames,
  mergeDropValues,
  NOT_DROPS,
  POLICY_REASONS,
  reasonValues,
  toDropEvent,
} from '../../src/observe/drop-reasons.js';
import { FlowTable } from '../../src/observe/flows.js';

const KALLSYMS = [
  'ffffffff81000000 T _stext',
  'ffffffff81a00000 T ip_rcv_finish_core',
  'ffffffff81a00400 t ip_rcv_finish',
  'ffffffff81a00800 D some_data',
  'ffffffffc0a01000 t nf_hook_slow_x\t[nf_conntrack]',
  '0000000000000000 T hidden_by_kptr_restrict',
].join('\n');

describe('kallsyms', () => {
  const syms = Kallsyms.parse(KALLSYMS);

  it('keeps text symbols with an address, in address order', () => {
    expect(parseKallsyms(KALLSYMS).map((s) => s.name)).toEqual([
      '_stext',
      'ip_rcv_finish_core',
      'ip_rcv_finish',
      'nf_hook_slow_x',
    ]);
  });

  it('resolves an address to the function containing it, with the offset and module', () => {
    const r = syms.resolve(0xffffffff81a00260n);
    expect(r).toEqual({ name: 'ip_rcv_finish_core', offset: 0x260 });
    expect(formatResolved(r!)).toBe('ip_rcv_finish_core+0x260');
    expect(syms.resolve(0xffffffff81a00400n)).toEqual({ name: 'ip_rcv_finish', offset: 0 });
    expect(formatResolved(syms.resolve(0xffffffffc0a01010n)!)).toBe('nf_hook_slow_x+0x10 [nf_conntrack]');
    // Again from the cache: the same answer.
    expect(syms.resolve(0xffffffff81a00260n)).toEqual({ name: 'ip_rcv_finish_core', offset: 0x260 });
  });

  it('resolves nothing below the first symbol, far past the last, or with hidden addresses', () => {
    expect(syms.resolve(0x1000n)).toBeUndefined();
    expect(syms.resolve(0xffffffffc0a01000n + (1n << 24n))).toBeUndefined();
    expect(Kallsyms.parse('0000000000000000 T a\n0000000000000000 t b').size).toBe(0);
  });
});

const SKB_DROP_REASON = new Map<string, bigint>([
  ['SKB_NOT_DROPPED_YET', 0n],
  ['SKB_CONSUMED', 1n],
  ['SKB_DROP_REASON_NOT_SPECIFIED', 2n],
  ['SKB_DROP_REASON_NO_SOCKET', 3n],
  ['SKB_DROP_REASON_NETFILTER_DROP', 12n],
  ['SKB_DROP_REASON_IP_RPFILTER', 16n],
  ['SKB_DROP_REASON_TC_INGRESS', 73n],
  ['SKB_DROP_REASON_IP_INNOROUTES', 88n],
  ['SKB_DROP_REASON_MAX', 130n],
  ['SKB_DROP_REASON_SUBSYS_MASK', 0xffff0000n],
]);

describe('drop reasons', () => {
  const names = dropReasonNames(SKB_DROP_REASON);

  it('names reasons as the kernel spells them, without SKB_DROP_REASON_ and without bounds', () => {
    expect(names.get(16)).toBe('IP_RPFILTER');
    expect(names.get(88)).toBe('IP_INNOROUTES');
    expect(names.get(2)).toBe('NOT_SPECIFIED');
    expect(names.has(130)).toBe(false);
    expect([...names.values()]).not.toContain('SUBSYS_MASK');
  });

  it('skips not-drops and the reasons our policy produces, by their values on this kernel', () => {
    expect(reasonValues(names, [...NOT_DROPS, ...POLICY_REASONS]).sort((a, b) => a - b)).toEqual([2, 12, 73]);
  });
});

const KFREE_SKB_FORMAT = `name: kfree_skb
format:
	field:unsigned short common_type;	offset:0;	size:2;	signed:0;
	field:void * skbaddr;	offset:8;	size:8;	signed:0;
	field:void * location;	offset:16;	size:8;	signed:0;
	field:void * rx_sk;	offset:24;	size:8;	signed:0;
	field:unsigned short protocol;	offset:32;	size:2;	signed:0;
	field:enum skb_drop_reason reason;	offset:36;	size:4;	signed:0;
`;

const SKB = { head: 192, network_header: 180, len: 112, dev: 16, 'nd_net.net': 264, 'ns.inum': 176 };
const SIZES: Record<string, number> = {
  head: 8,
  network_header: 2,
  len: 4,
  dev: 8,
  'nd_net.net': 8,
  'ns.inum': 4,
};
const resolver = (_struct: string, path: string): { bytes: number; size: number } => ({
  bytes: SKB[path as keyof typeof SKB],
  size: SIZES[path] ?? 0,
});

describe('drop program layout', () => {
  it('reads the kfree_skb fields from the tracepoint format, and refuses a kernel without reason', () => {
    expect(kfreeSkbLayout(KFREE_SKB_FORMAT)).toEqual({ skbaddr: 8, location: 16, protocol: 32, reason: 36 });
    expect(() => kfreeSkbLayout(KFREE_SKB_FORMAT.replace(/.*reason;.*\n/, ''))).toThrow(
      /skb:kfree_skb has no field 'reason'/,
    );
  });

  it('takes struct offsets from the resolver and checks their sizes', () => {
    expect(skbLayout(resolver)).toEqual({
      head: 192,
      networkHeader: 180,
      len: 112,
      dev: 16,
      devNet: 264,
      netInum: 176,
    });
    expect(() =>
      skbLayout((s, p) => ({ ...resolver(s, p), size: p === 'network_header' ? 4 : resolver(s, p).size })),
    ).toThrow(/struct sk_buff field 'network_header' is 4 bytes on this kernel; expected 2/);
  });

  it('assembles a program against those offsets', () => {
    const program = dropProgram(kfreeSkbLayout(KFREE_SKB_FORMAT), skbLayout(resolver));
    expect(program.instructions.length).toBeGreaterThan(50);
  });
});

describe('drop aggregates', () => {
  it('keeps IPv4 mapped and IPv6 as is in 16 bytes, and decodes them back', () => {
    const v4 = codecs.encode(address16, '198.18.0.3');
    expect(v4.toString('hex')).toBe('00000000000000000000ffffc6120003');
    expect(codecs.decode(address16, v4)).toBe('198.18.0.3');
    const v6 = codecs.encode(address16, 'fd00:5957::3');
    expect(codecs.decode(address16, v6)).toBe('fd00:5957::3');
  });

  const key: DropKey = {
    location: 0xffffffff81a00260n,
    reason: 16,
    protocol: 17,
    family: 4,
    dport: 7777,
    src: '198.18.0.3',
    dst: '198.18.0.4',
  };
  it('decodes a key as the program writes it: location, reason, protocol, family, port in network order', () => {
    const raw = Buffer.alloc(dropKey.size);
    raw.writeBigUInt64LE(0xffffffff81a00260n, 0);
    raw.writeUInt32LE(16, 8);
    raw[12] = 17;
    raw[13] = 4;
    raw.writeUInt16BE(7777, 14);
    codecs.encode(address16, '198.18.0.3').copy(raw, 16);
    codecs.encode(address16, '198.18.0.4').copy(raw, 32);
    expect(codecs.decode(dropKey, raw)).toEqual(key);
    expect(dropValue.size).toBe(32);
  });

  const ctx = {
    reasons: dropReasonNames(SKB_DROP_REASON),
    functionAt: (a: bigint) => formatResolved(Kallsyms.parse(KALLSYMS).resolve(a)!),
    podOf: (a: string) => ({ '198.18.0.3': 'x/b', '198.18.0.4': 'x/c' })[a],
    clockOffsetMs: 1_000_000,
  };

  it('merges per-CPU values: packets and bytes add up, first is the earliest, last the latest', () => {
    expect(
      mergeDropValues([
        { packets: 2, bytes: 100, firstNs: 5_000_000n, lastNs: 9_000_000n },
        { packets: 0, bytes: 0, firstNs: 0n, lastNs: 0n },
        { packets: 1, bytes: 60, firstNs: 3_000_000n, lastNs: 4_000_000n },
      ]),
    ).toEqual({ packets: 3, bytes: 160, firstNs: 3_000_000n, lastNs: 9_000_000n });
  });

  it('turns an aggregate into an event named by reason and function, on the destination pod', () => {
    const e = toDropEvent(key, [{ packets: 2, bytes: 66, firstNs: 5_000_000n, lastNs: 7_000_000n }], ctx);
    expect(e).toEqual({
      kind: 'drop',
      reason: 'IP_RPFILTER',
      function: 'ip_rcv_finish_core+0x260',
      protocol: 17,
      src: '198.18.0.3',
      dst: '198.18.0.4',
      sport: 0,
      dport: 7777,
      endpoint: 'x/c',
      direction: 'ingress',
      packets: 2,
      bytes: 66,
      firstSeen: 1_000_005,
      lastSeen: 1_000_007,
    });
    const outbound = toDropEvent(
      { ...key, dst: '198.19.250.9', reason: 0x10001 },
      [{ packets: 1, bytes: 1, firstNs: 1n, lastNs: 1n }],
      ctx,
    );
    expect(outbound).toMatchObject({ endpoint: 'x/b', direction: 'egress', reason: 'REASON_0x10001' });
    expect(toDropEvent(key, [{ packets: 0, bytes: 0, firstNs: 0n, lastNs: 0n }], ctx)).toBeUndefined();
  });
});

describe('flow table: kernel drops', () => {
  const drop = (over: Partial<KernelDropEvent> = {}): KernelDropEvent => ({
    kind: 'drop',
    reason: 'IP_INNOROUTES',
    function: 'ip_route_input_slow+0x1c',
    protocol: 17,
    src: '198.18.0.2',
    dst: '198.19.250.9',
    sport: 0,
    dport: 9999,
    endpoint: 'x/a',
    direction: 'egress',
    packets: 3,
    bytes: 99,
    firstSeen: 1000,
    lastSeen: 2000,
    ...over,
  });

  it('keeps one dropped record per reason, function and tuple, with the reason and function', () => {
    const t = new FlowTable({ node: 'node-1' });
    t.event(drop());
    t.event(drop({ packets: 1, bytes: 33, firstSeen: 2500, lastSeen: 3000 }));
    t.event(drop({ reason: 'IP_RPFILTER', function: 'ip_rcv_finish_core+0x260' }));
    const flows = t.list({ verdict: 'dropped' });
    expect(flows).toHaveLength(2);
    expect(flows.find((f) => f.dropReason === 'IP_INNOROUTES')).toMatchObject({
      verdict: 'dropped',
      rule: 'kernel/IP_INNOROUTES',
      dropFunction: 'ip_route_input_slow+0x1c',
      packets: 4,
      bytes: 132,
      connections: 0,
      endpoint: 'x/a',
      protocol: 'UDP',
    });
    expect(t.list({ verdict: 'deny' })).toEqual([]);
    expect(t.stats().kernelDrops).toEqual({ IP_INNOROUTES: 4, IP_RPFILTER: 3 });
  });
});
