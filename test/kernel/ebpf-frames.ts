/**
 * Crafted Ethernet frames and a harness that loads one node's generated policy programs (with
 * their maps filled exactly as apply fills them) and runs frames through them with
 * BPF_PROG_TEST_RUN. Nothing is attached; nothing leaves the kernel call.
 */
import { Program, type TestRunResult } from '../../src/bpf/index.js';
import type { Direction, IR } from '../../src/ir/types.js';
import { SKB, TCX } from '../../src/dataplane/ebpf/layout.js';
import { closeNodeMaps, createNodeMaps, programMaps, type NodeMaps } from '../../src/dataplane/ebpf/maps.js';
import { allocate, nodeView, type Allocation } from '../../src/dataplane/ebpf/node.js';
import { policyProgram } from '../../src/dataplane/ebpf/program.js';
import { addSetMembers, planSetSync, removeSetMembers } from '../../src/dataplane/ebpf/sync.js';
import {
  buildTables,
  chooseTables,
  dropTables,
  freedTableIndices,
  installTables,
  planTableWrites,
  type TableChoice,
  type TableState,
} from '../../src/dataplane/ebpf/tables.js';

export type FrameProtocol = 'TCP' | 'UDP' | 'SCTP' | 'ICMP';

export interface FrameSpec {
  src: string;
  dst: string;
  protocol: FrameProtocol | number;
  sport?: number;
  dport?: number;
  /** TCP flags byte; default SYN. */
  tcpFlags?: number;
  /** ICMP type (default 8, echo request), code and echo id. */
  icmpType?: number;
  icmpCode?: number;
  icmpId?: number;
  /** 32-bit words of IPv4 options (NOPs), 0–10. */
  ipOptionWords?: number;
  /** Fragment offset in 8-byte units and the more-fragments flag. */
  fragmentOffset?: number;
  moreFragments?: boolean;
  /** Bytes after the L4 header. */
  payload?: Buffer;
  /** ICMP errors: the quoted packet (IP header onwards). */
  quoted?: Buffer;
}

const PROTO: Record<FrameProtocol, number> = { TCP: 6, UDP: 17, SCTP: 132, ICMP: 1 };

function writeAddress(buf: Buffer, offset: number, address: string): void {
  address.split('.').forEach((octet, i) => buf.writeUInt8(Number(octet), offset + i));
}

/** The IP packet of a spec (no Ethernet header). */
export function ipPacket(spec: FrameSpec): Buffer {
  const proto = typeof spec.protocol === 'number' ? spec.protocol : PROTO[spec.protocol];
  const optionBytes = (spec.ipOptionWords ?? 0) * 4;
  const ihl = 20 + optionBytes;
  const payload = spec.payload ?? Buffer.alloc(8);
  let l4: Buffer;
  if (proto === 6) {
    l4 = Buffer.alloc(20);
    l4.writeUInt16BE(spec.sport ?? 40000, 0);
    l4.writeUInt16BE(spec.dport ?? 80, 2);
    l4.writeUInt8(0x50, 12);
    l4.writeUInt8(spec.tcpFlags ?? 0x02, 13);
    l4.writeUInt16BE(65535, 14);
  } else if (proto === 17 || proto === 132) {
    l4 = Buffer.alloc(proto === 17 ? 8 : 12);
    l4.writeUInt16BE(spec.sport ?? 40000, 0);
    l4.writeUInt16BE(spec.dport ?? 80, 2);
    if (proto === 17) l4.writeUInt16BE(8 + payload.length, 4);
  } else if (proto === 1) {
    l4 = Buffer.alloc(8);
    l4.writeUInt8(spec.icmpType ?? 8, 0);
    l4.writeUInt8(spec.icmpCode ?? 0, 1);
    l4.writeUInt16BE(spec.icmpId ?? 0x1234, 4);
    l4.writeUInt16BE(1, 6);
  } else l4 = Buffer.alloc(0);
  const body = Buffer.concat([l4, spec.quoted ?? payload]);
  const ip = Buffer.alloc(ihl);
  ip.writeUInt8(0x40 | (ihl / 4), 0);
  ip.writeUInt16BE(ihl + body.length, 2);
  ip.writeUInt16BE(((spec.moreFragments ? 1 : 0) << 13) | (spec.fragmentOffset ?? 0), 6);
  ip.writeUInt8(64, 8);
  ip.writeUInt8(proto, 9);
  writeAddress(ip, 12, spec.src);
  writeAddress(ip, 16, spec.dst);
  ip.fill(1, 20); // NOP options
  return Buffer.concat([ip, body]);
}

export function ethernet(etherType: number, payload: Buffer): Buffer {
  const eth = Buffer.alloc(14);
  Buffer.from([0xee, 0xee, 0xee, 0xee, 0xee, 0xee]).copy(eth, 0);
  Buffer.from([0x02, 0, 0, 0, 0, 1]).copy(eth, 6);
  eth.writeUInt16BE(etherType, 12);
  return Buffer.concat([eth, payload]);
}

export function frame(spec: FrameSpec): Buffer {
  return ethernet(0x0800, ipPacket(spec));
}

/**
 * __sk_buff input for PROG_TEST_RUN: a non-zero ingress_ifindex makes the packet look forwarded
 * (with 0 an ingress program treats it as the node's own traffic).
 */
export function skbContext(ingressIfindex = 1): Buffer {
  const ctx = Buffer.alloc(SKB.testContextSize);
  ctx.writeUInt32LE(ingressIfindex, SKB.ingressIfindex);
  return ctx;
}

export type Verdict = 'pass' | 'drop';

export function verdictOf(r: TestRunResult): Verdict {
  if (r.retval === TCX.NEXT) return 'pass';
  if (r.retval === TCX.SHOT) return 'drop';
  throw new Error(`unexpected tcx return value ${r.retval}`);
}

/**
 * One node's policy programs loaded against fresh maps, filled as apply would fill them (decision
 * tables included, for rule sets that carry one); update() moves to another IR the way apply does
 * (stable numbers, contents by difference, changed tables swapped in whole).
 */
export class NodeHarness {
  readonly maps: NodeMaps;
  alloc: Allocation;
  /** Which rule sets the last update decided by table. */
  tables: TableChoice = { tabled: new Map(), fallbacks: [] };
  private tableStates: TableState[] = [];
  private readonly programs = new Map<string, Program>();

  constructor(
    ir: IR,
    private readonly node: string,
  ) {
    this.alloc = { sets: {}, portSets: {}, slots: {} };
    this.maps = createNodeMaps({ counterSlots: 1024, conntrackCapacity: 1024 });
    try {
      this.update(ir);
    } catch (e) {
      this.close();
      throw e;
    }
  }

  update(ir: IR): void {
    const view = nodeView(ir, this.node);
    const before = this.alloc;
    this.tables = chooseTables(view.ruleSets, allocate(view, before, []).slots);
    this.alloc = allocate(view, before, [...this.tables.tabled.keys()]);
    const plan = planSetSync(this.maps, view, this.alloc);
    addSetMembers(this.maps, plan);
    removeSetMembers(this.maps, plan);
    const writes = planTableWrites(
      view.ruleSets,
      this.tables,
      this.alloc,
      this.tableStates,
      this.maps.tables,
    );
    const built = buildTables(writes.writes);
    try {
      this.tableStates = [...writes.kept, ...installTables(this.maps.tables, built)];
    } finally {
      for (const m of built.values()) m.close();
    }
    dropTables(this.maps.tables, freedTableIndices(before, this.alloc));
    for (const p of this.programs.values()) p.close();
    this.programs.clear();
    for (const rs of view.ruleSets) {
      const g = policyProgram(rs, this.alloc);
      this.programs.set(
        `${rs.endpoint}|${rs.direction}`,
        Program.load({
          name: g.name,
          type: 'sched_cls',
          expectedAttachType: rs.direction === 'ingress' ? 'tcx_egress' : 'tcx_ingress',
          instructions: g.program,
          maps: programMaps(this.maps),
        }),
      );
    }
  }

  program(endpoint: string, direction: Direction): Program {
    const p = this.programs.get(`${endpoint}|${direction}`);
    if (!p) throw new Error(`no program for ${endpoint} ${direction}`);
    return p;
  }

  run(endpoint: string, direction: Direction, data: Buffer, ingressIfindex = 1): Verdict {
    return verdictOf(
      this.program(endpoint, direction).testRun({
        data,
        context: skbContext(ingressIfindex),
        contextOutSize: 0,
      }),
    );
  }

  clearConntrack(): void {
    this.maps.ct.clear();
  }

  close(): void {
    for (const p of this.programs.values()) p.close();
    this.programs.clear();
    closeNodeMaps(this.maps);
  }
}
