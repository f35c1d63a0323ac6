import { closeSync, constants, existsSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { NativeBlock, ifNameToIndex, rawMount, rawPerfEventOpen, closeFd } from './sys.js';
import { Attr, RawTracepointAttr } from './attr.js';
import {
  bpf,
  getFdById,
  linkCreate,
  linkDetach,
  linkUpdate,
  objInfo,
  progQuery,
  type ProgQueryResult,
} from './commands.js';
import { ATTACH_TYPES, AttachFlags, BpfCommand, LINK_TYPES, XdpFlags, type AttachType } from './constants.js';
import { bpfError } from './errors.js';
import { needing } from './features.js';
import { BpfObject } from './object.js';
import { openPinnedFd } from './pins.js';
import type { Program } from './programs.js';

export interface LinkInfo {
  type: string;
  id: number;
  programId: number;
  /** XDP and tcx links: the interface (in the namespace the link was made in). */
  ifindex?: number;
  attachType?: number;
  cgroupId?: bigint;
}

/** struct bpf_link_info: type, id, prog_id, then a per-type union at offset 16. */
export function readLinkInfo(fd: number): LinkInfo {
  const info = objInfo(fd, 64, `link fd ${fd}`);
  const typeNumber = info.readUInt32LE(0);
  const type = LINK_TYPES[typeNumber] ?? `type ${typeNumber}`;
  const base: LinkInfo = { type, id: info.readUInt32LE(4), programId: info.readUInt32LE(8) };
  if (type === 'xdp') return { ...base, ifindex: info.readUInt32LE(16) };
  if (type === 'tcx' || type === 'netkit')
    return { ...base, ifindex: info.readUInt32LE(16), attachType: info.readUInt32LE(20) };
  if (type === 'cgroup')
    return { ...base, cgroupId: info.readBigUInt64LE(16), attachType: info.readUInt32LE(24) };
  return base;
}

/**
 * A bpf_link: the program stays attached while the link lives (an open fd or a pin). Closing the
 * last reference detaches; update() swaps the program atomically, with no gap in between.
 */
export class Link extends BpfObject {
  private constructor(
    fd: number,
    private readonly label: string,
  ) {
    super(fd);
  }

  static fromFd(fd: number, label = `link fd ${fd}`): Link {
    return new Link(fd, label);
  }

  static fromPin(path: string): Link {
    return new Link(openPinnedFd(path), `link '${path}'`);
  }

  static fromId(id: number): Link {
    return new Link(getFdById(BpfCommand.LINK_GET_FD_BY_ID, id, `link id ${id}`), `link id ${id}`);
  }

  get description(): string {
    return this.label;
  }

  info(): LinkInfo {
    return readLinkInfo(this.fd);
  }

  /**
   * Replaces the attached program in one step (BPF_LINK_UPDATE). With `expected`, the swap only
   * happens if that program is still the attached one (BPF_F_REPLACE), so two updaters cannot race.
   */
  update(program: Program, options: { expected?: Program } = {}): void {
    linkUpdate(this.fd, program.fd, options.expected?.fd, `${this.label} -> ${program.description}`);
  }

  /** Detaches now, even if the link is pinned elsewhere; the fd stays valid until close(). */
  detach(): void {
    linkDetach(this.fd, this.label);
  }
}

export interface InterfaceTarget {
  ifindex?: number;
  /** Resolved with if_nametoindex in the calling thread's network namespace. */
  ifname?: string;
}

/** An interface index from an index or a name in the current thread's network namespace. */
export function resolveIfindex(target: InterfaceTarget): number {
  if (target.ifindex !== undefined) return target.ifindex;
  if (!target.ifname) throw new Error('name an interface: ifindex or ifname');
  const index = ifNameToIndex(target.ifname);
  if (index === 0)
    throw new Error(
      `interface '${target.ifname}' not found in this thread's network namespace; interfaces inside a namespace must be resolved and attached within withNetns()`,
    );
  return index;
}

function describeInterface(target: InterfaceTarget, ifindex: number): string {
  return target.ifname ? `'${target.ifname}' (ifindex ${ifindex})` : `ifindex ${ifindex}`;
}

export type XdpMode = 'auto' | 'native' | 'generic';

/** Attaches an XDP program with BPF_LINK_CREATE (attach type BPF_XDP). */
export function attachXdp(program: Program, target: InterfaceTarget & { mode?: XdpMode }): Link {
  const ifindex = resolveIfindex(target);
  const flags =
    target.mode === 'native' ? XdpFlags.DRV_MODE : target.mode === 'generic' ? XdpFlags.SKB_MODE : 0;
  const label = `xdp link on ${describeInterface(target, ifindex)}`;
  const fd = linkCreate(
    { progFd: program.fd, target: ifindex, attachType: ATTACH_TYPES.xdp, flags },
    `${program.description} -> ${label}`,
  );
  return Link.fromFd(fd, label);
}

export interface TcxTarget extends InterfaceTarget {
  direction: 'ingress' | 'egress';
  /** Run before this link or program (without one: first in the chain). */
  before?: Link | Program | true;
  /** Run after this link or program (without one: last in the chain). */
  after?: Link | Program | true;
  /** Fail with ESTALE unless the chain is still at this revision (see queryTcx). */
  expectedRevision?: bigint;
}

function relativeTo(anchor: Link | Program | true | undefined): { flags: number; relative?: number } {
  if (anchor === undefined || anchor === true) return { flags: 0 };
  return anchor instanceof Link
    ? { flags: AttachFlags.LINK, relative: anchor.fd }
    : { flags: 0, relative: anchor.fd };
}

/** Attaches a SCHED_CLS program to tcx ingress/egress (BPF_TCX_INGRESS = 46, BPF_TCX_EGRESS = 47). */
export function attachTcx(program: Program, target: TcxTarget): Link {
  if (target.before !== undefined && target.after !== undefined)
    throw new Error('tcx: give before or after, not both');
  const ifindex = resolveIfindex(target);
  const attachType = target.direction === 'ingress' ? ATTACH_TYPES.tcx_ingress : ATTACH_TYPES.tcx_egress;
  const anchor = target.before ?? target.after;
  const order = relativeTo(anchor);
  const flags =
    order.flags |
    (target.before !== undefined ? AttachFlags.BEFORE : 0) |
    (target.after !== undefined ? AttachFlags.AFTER : 0);
  const label = `tcx ${target.direction} link on ${describeInterface(target, ifindex)}`;
  // Kernels before 6.6 refuse the attach type with a bare EINVAL: say that tcx is what they lack.
  const fd = needing('tcx', () =>
    linkCreate(
      {
        progFd: program.fd,
        target: ifindex,
        attachType,
        flags,
        relative: order.relative,
        expectedRevision: target.expectedRevision,
      },
      `${program.description} -> ${label}`,
    ),
  );
  return Link.fromFd(fd, label);
}

/** Programs on a tcx hook in the order they run, and the chain's revision. */
export function queryTcx(target: InterfaceTarget & { direction: 'ingress' | 'egress' }): ProgQueryResult {
  const ifindex = resolveIfindex(target);
  const attachType = target.direction === 'ingress' ? ATTACH_TYPES.tcx_ingress : ATTACH_TYPES.tcx_egress;
  return progQuery(
    ifindex,
    attachType,
    64,
    `tcx ${target.direction} on ${describeInterface(target, ifindex)}`,
  );
}

export type CgroupAttachType = Extract<AttachType, `cgroup_${string}`>;

/** Attaches to a cgroup v2 directory (path or open fd), e.g. cgroup_inet4_connect. */
export function attachCgroup(
  program: Program,
  target: { cgroup: string | number; attachType: CgroupAttachType },
): Link {
  const ownFd = typeof target.cgroup === 'string';
  const cgroupFd =
    typeof target.cgroup === 'string'
      ? openSync(target.cgroup, constants.O_RDONLY | constants.O_DIRECTORY)
      : target.cgroup;
  try {
    const label = `${target.attachType} link on cgroup ${typeof target.cgroup === 'string' ? `'${target.cgroup}'` : `fd ${cgroupFd}`}`;
    const fd = linkCreate(
      { progFd: program.fd, target: cgroupFd, attachType: ATTACH_TYPES[target.attachType], flags: 0 },
      `${program.description} -> ${label}`,
    );
    return Link.fromFd(fd, label);
  } finally {
    // The link holds its own reference to the cgroup.
    if (ownFd) closeSync(cgroupFd);
  }
}

const TRACEFS_CANDIDATES = ['/sys/kernel/tracing', '/sys/kernel/debug/tracing'];

/** Finds tracefs, mounting it at /sys/kernel/tracing if no mount exists; returns its path. */
export function ensureTracefs(): string {
  for (const dir of TRACEFS_CANDIDATES) if (existsSync(join(dir, 'events'))) return dir;
  const target = TRACEFS_CANDIDATES[0] as string;
  const result = rawMount('tracefs', target, 'tracefs', 0, null);
  if (result < 0) throw bpfError(-result, { operation: 'mount -t tracefs', subject: `at ${target}` });
  return target;
}

export function tracepointId(category: string, name: string): number {
  if (!/^\w+$/.test(category) || !/^\w+$/.test(name))
    throw new Error(`invalid tracepoint ${category}:${name}`);
  const file = join(ensureTracefs(), 'events', category, name, 'id');
  if (!existsSync(file)) throw new Error(`tracepoint ${category}:${name} does not exist (no ${file})`);
  return Number(readFileSync(file, 'utf8').trim());
}

const PERF_TYPE_TRACEPOINT = 2;
const PERF_ATTR_SIZE = 72; // PERF_ATTR_SIZE_VER1: up to config2
const PERF_FLAG_FD_CLOEXEC = 8;

interface PerfEventAttr {
  type: number;
  config: bigint;
  /** kprobe: the function name's address. */
  config1?: bigint;
}

/** perf_event_open(attr) then BPF_LINK_CREATE (BPF_PERF_EVENT): the link owns the event. */
function attachPerfEvent(program: Program, event: PerfEventAttr, label: string): Link {
  const attr = new NativeBlock(PERF_ATTR_SIZE);
  let perfFd: number;
  try {
    attr.buffer.writeUInt32LE(event.type, 0);
    attr.buffer.writeUInt32LE(PERF_ATTR_SIZE, 4);
    attr.buffer.writeBigUInt64LE(event.config, 8);
    attr.buffer.writeBigUInt64LE(event.config1 ?? 0n, 56);
    // pid -1, cpu 0: one event whose BPF program runs for the probe on every CPU.
    perfFd = rawPerfEventOpen(attr, -1, 0, -1, PERF_FLAG_FD_CLOEXEC);
  } finally {
    attr.free();
  }
  if (perfFd < 0) throw bpfError(-perfFd, { operation: 'perf_event_open', subject: label });
  try {
    const fd = linkCreate(
      { progFd: program.fd, target: perfFd, attachType: ATTACH_TYPES.perf_event, flags: 0 },
      `${program.description} -> ${label}`,
    );
    return Link.fromFd(fd, `${label} link`);
  } finally {
    // The link holds the perf event file.
    closeFd(perfFd);
  }
}

/** Attaches a TRACEPOINT program via perf_event_open + BPF_LINK_CREATE (BPF_PERF_EVENT). */
export function attachTracepoint(program: Program, target: { category: string; name: string }): Link {
  const id = tracepointId(target.category, target.name);
  return attachPerfEvent(
    program,
    { type: PERF_TYPE_TRACEPOINT, config: BigInt(id) },
    `tracepoint ${target.category}:${target.name}`,
  );
}

const KPROBE_PMU = '/sys/bus/event_source/devices/kprobe';

/**
 * Attaches a KPROBE program to a kernel function's entry, or its return (kretprobe), through the
 * kprobe PMU and a perf-event link: nothing is written to tracefs, so nothing outlives the link.
 */
export function attachKprobe(program: Program, target: { function: string; retprobe?: boolean }): Link {
  if (!/^[\w.]+$/.test(target.function)) throw new Error(`invalid kernel function name '${target.function}'`);
  const label = `${target.retprobe ? 'kretprobe' : 'kprobe'} on ${target.function}`;
  if (!existsSync(join(KPROBE_PMU, 'type')))
    throw new Error(`${label}: this kernel has no kprobe PMU (${KPROBE_PMU}); it needs CONFIG_KPROBE_EVENTS`);
  const type = Number(readFileSync(join(KPROBE_PMU, 'type'), 'utf8').trim());
  // format/retprobe reads "config:0": the bit that turns the probe into a return probe.
  const bit = Number(
    /config:(\d+)/.exec(readFileSync(join(KPROBE_PMU, 'format', 'retprobe'), 'utf8'))?.[1] ?? 0,
  );
  const name = new NativeBlock(target.function.length + 1);
  try {
    name.buffer.write(`${target.function}\0`, 'latin1');
    return attachPerfEvent(
      program,
      { type, config: target.retprobe ? 1n << BigInt(bit) : 0n, config1: name.address },
      label,
    );
  } finally {
    name.free();
  }
}

export type TracingAttachType = 'trace_fentry' | 'trace_fexit';

/**
 * Attaches a TRACING program (fentry/fexit) to the kernel function it was loaded for
 * (ProgramSpec.attachTo) with BPF_LINK_CREATE.
 */
export function attachTracing(program: Program, attachType: TracingAttachType): Link {
  const label = `${attachType === 'trace_fentry' ? 'fentry' : 'fexit'} link of ${program.description}`;
  const fd = linkCreate(
    { progFd: program.fd, target: 0, attachType: ATTACH_TYPES[attachType], flags: 0 },
    label,
  );
  return Link.fromFd(fd, label);
}

/**
 * Attaches a RAW_TRACEPOINT program to tracepoint `name` ("kfree_skb", untyped u64 arguments),
 * or, without a name, a tp_btf TRACING program to the tracepoint it was loaded for.
 */
export function attachRawTracepoint(program: Program, name?: string): Link {
  if (name !== undefined && !/^\w+$/.test(name)) throw new Error(`invalid raw tracepoint '${name}'`);
  const label = `raw tracepoint link${name ? ` on ${name}` : ''} of ${program.description}`;
  const nameBlock = name === undefined ? undefined : new NativeBlock(name.length + 1);
  const attr = new Attr();
  try {
    if (nameBlock) {
      nameBlock.buffer.write(`${name}\0`, 'latin1');
      attr.u64(RawTracepointAttr.name, nameBlock.address);
    }
    attr.u32(RawTracepointAttr.progFd, program.fd);
    const fd = bpf(BpfCommand.RAW_TRACEPOINT_OPEN, attr, label);
    return Link.fromFd(fd, label);
  } finally {
    attr.block.free();
    nameBlock?.free();
  }
}
