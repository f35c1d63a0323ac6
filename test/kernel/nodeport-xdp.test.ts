/**
 * The fabric's XDP program under BPF_PROG_TEST_RUN, on real maps (created for the test, never
 * pinned or attached): the node-port load balancer translates at XDP — a connection to a backend
 * on this node leaves XDP rewritten with checksums that verify, both np_nat entries written —
 * while a source on a prefilter list is dropped first (counted, nothing recorded), and a
 * connection to a backend on another node is left to tcx untouched.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { BpfMap, Program, XdpAction, type MapBase } from '../../src/bpf/index.js';
import { closeNodeMaps, createNodeMaps, programMaps, type NodeMaps } from '../../src/dataplane/ebpf/maps.js';
import {
  NAT_FLAG,
  natKey,
  natValue,
  NP_BACKEND_REMOTE,
  npAffinityKey,
  npAffinityValue,
  npBackendValue,
  npSvcKey,
  type NatKey,
  type NatValue,
} from '../../src/dataplane/ebpf/nodeport-layout.js';
import { fabricXdpProgram, type FabricXdpParts } from '../../src/dataplane/ebpf/nodeport-xdp-program.js';
import { backendKey, svcValue } from '../../src/dataplane/ebpf/services-layout.js';
import { describeKernel } from '../support/kernel.js';
import { frame, type FrameSpec } from './ebpf-frames.js';

const EXTERNAL = '198.19.128.1';
const FABRIC = '198.18.255.1';
const CLIENT = '198.19.129.7';
const LISTED = '198.19.129.66';
const LOCAL_BACKEND = '198.18.40.11';
const REMOTE_BACKEND = '198.18.40.12';
const PARTS: FabricXdpParts = { prefilter: true, nodePorts: { own: EXTERNAL, snat: FABRIC } };

let node: NodeMaps;
let np: Record<string, MapBase>;
let nat: BpfMap<NatKey, NatValue>;
let program: Program;

function sum16(buf: Buffer, start: number, end: number, initial = 0): number {
  let s = initial;
  for (let i = start; i < end; i += 2) s += (buf[i] ?? 0) * 256 + (i + 1 < end ? (buf[i + 1] ?? 0) : 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

/** Fills in the IPv4 and L4 checksums of a crafted frame (Ethernet + IPv4 without options). */
function withChecksums(f: Buffer): Buffer {
  const out = Buffer.from(f);
  out.writeUInt16BE(0, 24);
  out.writeUInt16BE(~sum16(out, 14, 34) & 0xffff, 24);
  const proto = out[23];
  const csumAt = proto === 6 ? 34 + 16 : 34 + 6;
  out.writeUInt16BE(0, csumAt);
  out.writeUInt16BE(~l4Sum(out) & 0xffff || 0xffff, csumAt);
  return out;
}

/** The one's-complement sum over the pseudo header and the L4 segment: 0xffff when it verifies. */
function l4Sum(f: Buffer): number {
  const length = f.readUInt16BE(16) - 20;
  const pseudo = sum16(f, 26, 34) + (f[23] ?? 0) + length;
  return sum16(f, 34, 34 + length, pseudo);
}

function checksumsVerify(f: Buffer): boolean {
  return sum16(f, 14, 34) === 0xffff && l4Sum(f) === 0xffff;
}

const address = (f: Buffer, at: number): string => [...f.subarray(at, at + 4)].join('.');

function run(spec: FrameSpec): { verdict: number; out: Buffer; in: Buffer } {
  const input = withChecksums(frame(spec));
  const r = program.testRun({ data: input });
  return { verdict: r.retval, out: r.dataOut.subarray(0, input.length), in: input };
}

describeKernel('ebpf: node ports at XDP, behind the prefilter', () => {
  beforeAll(() => {
    node = createNodeMaps({ counterSlots: 64, prefilterCapacity: 16 });
    const svc = BpfMap.create({
      type: 'hash',
      name: 'np_svc',
      key: npSvcKey,
      value: svcValue,
      maxEntries: 16,
    });
    const backends = BpfMap.create({
      type: 'hash',
      name: 'np_backends',
      key: backendKey,
      value: npBackendValue,
      maxEntries: 16,
    });
    nat = BpfMap.create({ type: 'lru_hash', name: 'np_nat', key: natKey, value: natValue, maxEntries: 64 });
    const affinity = BpfMap.create({
      type: 'lru_hash',
      name: 'np_affinity',
      key: npAffinityKey,
      value: npAffinityValue,
      maxEntries: 16,
    });
    np = { np_svc: svc, np_backends: backends, np_nat: nat, np_affinity: affinity };
    // 30080/TCP and 30081/UDP → the backend on this node; 30090/TCP → the one on another node.
    svc.update({ vip: EXTERNAL, port: 30080, proto: 6, node: 0 }, { count: 1, id: 1, affinity: 0, flags: 0 });
    svc.update(
      { vip: EXTERNAL, port: 30081, proto: 17, node: 0 },
      { count: 1, id: 2, affinity: 0, flags: 0 },
    );
    svc.update({ vip: EXTERNAL, port: 30090, proto: 6, node: 0 }, { count: 1, id: 3, affinity: 0, flags: 0 });
    backends.update({ id: 1, slot: 0 }, { addr: LOCAL_BACKEND, port: 7000, pad: 0 });
    backends.update({ id: 2, slot: 0 }, { addr: LOCAL_BACKEND, port: 7001, pad: 0 });
    backends.update({ id: 3, slot: 0 }, { addr: REMOTE_BACKEND, port: 7000, pad: NP_BACKEND_REMOTE });
    node.pfTrie.update(`${LISTED}/32`, 0);
    program = Program.load({
      name: 'sy_fabric_xdp',
      type: 'xdp',
      expectedAttachType: 'xdp',
      instructions: fabricXdpProgram(PARTS),
      maps: { ...programMaps(node), ...np },
    });
  });

  afterAll(() => {
    program?.close();
    for (const m of Object.values(np ?? {})) m.close();
    if (node) closeNodeMaps(node);
  });

  it('translates a TCP connection to a backend on this node at XDP: rewritten, checksums verify, both entries recorded', () => {
    const r = run({ src: CLIENT, dst: EXTERNAL, protocol: 'TCP', sport: 41000, dport: 30080 });
    expect(checksumsVerify(r.in)).toBe(true);
    expect(r.verdict).toBe(XdpAction.PASS);
    expect(address(r.out, 26)).toBe(CLIENT);
    expect(address(r.out, 30)).toBe(LOCAL_BACKEND);
    expect(r.out.readUInt16BE(34)).toBe(41000);
    expect(r.out.readUInt16BE(36)).toBe(7000);
    expect(checksumsVerify(r.out)).toBe(true);
    const forward = nat.lookup({
      saddr: CLIENT,
      daddr: EXTERNAL,
      sport: 41000,
      dport: 30080,
      proto: 6,
      pad: 0,
      pad2: 0,
    });
    expect(forward).toMatchObject({ daddr: LOCAL_BACKEND, dport: 7000, flags: NAT_FLAG.forward });
    const reverse = nat.lookup({
      saddr: LOCAL_BACKEND,
      daddr: CLIENT,
      sport: 7000,
      dport: 41000,
      proto: 6,
      pad: 0,
      pad2: 0,
    });
    expect(reverse).toMatchObject({ saddr: EXTERNAL, sport: 30080, flags: NAT_FLAG.reverse });
    // The next packet of the connection (an ACK) is translated from the entry.
    const ack = run({
      src: CLIENT,
      dst: EXTERNAL,
      protocol: 'TCP',
      sport: 41000,
      dport: 30080,
      tcpFlags: 0x10,
    });
    expect(address(ack.out, 30)).toBe(LOCAL_BACKEND);
    expect(checksumsVerify(ack.out)).toBe(true);
  });

  it('translates UDP with a verifying checksum', () => {
    const r = run({
      src: CLIENT,
      dst: EXTERNAL,
      protocol: 'UDP',
      sport: 41001,
      dport: 30081,
      payload: Buffer.from('hello xdp'),
    });
    expect(r.verdict).toBe(XdpAction.PASS);
    expect(address(r.out, 30)).toBe(LOCAL_BACKEND);
    expect(r.out.readUInt16BE(36)).toBe(7001);
    expect(checksumsVerify(r.out)).toBe(true);
  });

  it('drops a source on a prefilter list before any translation: counted, nothing recorded', () => {
    const before = node.pfCounters.lookupSum(0);
    const r = run({ src: LISTED, dst: EXTERNAL, protocol: 'TCP', sport: 42000, dport: 30080 });
    expect(r.verdict).toBe(XdpAction.DROP);
    expect(node.pfCounters.lookupSum(0)).toMatchObject({ packets: (before?.packets ?? 0) + 1 });
    expect(
      nat.lookup({ saddr: LISTED, daddr: EXTERNAL, sport: 42000, dport: 30080, proto: 6, pad: 0, pad2: 0 }),
    ).toBeUndefined();
  });

  it('leaves a connection to a backend on another node to tcx: untouched and unrecorded', () => {
    const r = run({ src: CLIENT, dst: EXTERNAL, protocol: 'TCP', sport: 43000, dport: 30090 });
    expect(r.verdict).toBe(XdpAction.PASS);
    expect(r.out.equals(r.in)).toBe(true);
    expect(
      nat.lookup({ saddr: CLIENT, daddr: EXTERNAL, sport: 43000, dport: 30090, proto: 6, pad: 0, pad2: 0 }),
    ).toBeUndefined();
  });

  it('passes what is not a node port untouched', () => {
    const r = run({ src: CLIENT, dst: EXTERNAL, protocol: 'TCP', sport: 44000, dport: 22 });
    expect(r.verdict).toBe(XdpAction.PASS);
    expect(r.out.equals(r.in)).toBe(true);
  });
});
