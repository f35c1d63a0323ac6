import { NativeBlock } from './sys.js';

/**
 * union bpf_attr as a zeroed native block. Every command passes the same size: the kernel copies
 * what it knows and insists that bytes beyond that are zero, which they are, so one size fits
 * kernels older and newer than the layouts written here.
 */
export const ATTR_SIZE = 256;

export class Attr {
  readonly block: NativeBlock;
  private used = 0;

  constructor() {
    this.block = new NativeBlock(ATTR_SIZE);
  }

  /** Zeroes what the previous command wrote. */
  reset(): this {
    if (this.used > 0) this.block.buffer.fill(0, 0, this.used);
    this.used = 0;
    return this;
  }

  u32(offset: number, value: number): this {
    this.block.buffer.writeUInt32LE(value >>> 0, offset);
    this.used = Math.max(this.used, offset + 4);
    return this;
  }

  i32(offset: number, value: number): this {
    this.block.buffer.writeInt32LE(value | 0, offset);
    this.used = Math.max(this.used, offset + 4);
    return this;
  }

  u64(offset: number, value: bigint | number): this {
    this.block.buffer.writeBigUInt64LE(BigInt(value), offset);
    this.used = Math.max(this.used, offset + 8);
    return this;
  }

  bytes(offset: number, data: Buffer): this {
    data.copy(this.block.buffer, offset);
    this.used = Math.max(this.used, offset + data.length);
    return this;
  }

  /** A NUL-terminated name truncated to `max - 1` bytes (BPF_OBJ_NAME_LEN fields). */
  name(offset: number, value: string, max: number): this {
    const bytes = Buffer.from(value, 'utf8').subarray(0, max - 1);
    return this.bytes(offset, bytes);
  }

  readU32(offset: number): number {
    return this.block.buffer.readUInt32LE(offset);
  }

  readU64(offset: number): bigint {
    return this.block.buffer.readBigUInt64LE(offset);
  }
}

/** The attr block used by synchronous calls (JavaScript runs one at a time). */
export const syncAttr = new Attr();

/** Field offsets inside union bpf_attr, per command, from include/uapi/linux/bpf.h. */
export const MapCreateAttr = {
  mapType: 0,
  keySize: 4,
  valueSize: 8,
  maxEntries: 12,
  mapFlags: 16,
  innerMapFd: 20,
  numaNode: 24,
  mapName: 28,
  mapIfindex: 44,
} as const;

export const MapElemAttr = { mapFd: 0, key: 8, value: 16, nextKey: 16, flags: 24 } as const;

export const MapBatchAttr = {
  inBatch: 0,
  outBatch: 8,
  keys: 16,
  values: 24,
  count: 32,
  mapFd: 36,
  elemFlags: 40,
  flags: 48,
} as const;

export const ProgLoadAttr = {
  progType: 0,
  insnCnt: 4,
  insns: 8,
  license: 16,
  logLevel: 24,
  logSize: 28,
  logBuf: 32,
  kernVersion: 40,
  progFlags: 44,
  progName: 48,
  progIfindex: 64,
  expectedAttachType: 68,
  progBtfFd: 72,
  funcInfoRecSize: 76,
  funcInfo: 80,
  funcInfoCnt: 88,
  lineInfoRecSize: 92,
  lineInfo: 96,
  lineInfoCnt: 104,
  attachBtfId: 108,
  attachBtfObjFd: 112,
  logTrueSize: 140,
} as const;

export const BtfLoadAttr = { btf: 0, logBuf: 8, size: 16, logSize: 20, logLevel: 24 } as const;
export const RawTracepointAttr = { name: 0, progFd: 8 } as const;

export const ObjAttr = { pathname: 0, bpfFd: 8, fileFlags: 12 } as const;

export const TestRunAttr = {
  progFd: 0,
  retval: 4,
  dataSizeIn: 8,
  dataSizeOut: 12,
  dataIn: 16,
  dataOut: 24,
  repeat: 32,
  duration: 36,
  ctxSizeIn: 40,
  ctxSizeOut: 44,
  ctxIn: 48,
  ctxOut: 56,
  flags: 64,
  cpu: 68,
  batchSize: 72,
} as const;

export const GetIdAttr = { id: 0, nextId: 4, openFlags: 8 } as const;
export const InfoAttr = { bpfFd: 0, infoLen: 4, info: 8 } as const;

export const LinkCreateAttr = {
  progFd: 0,
  targetFd: 4,
  targetIfindex: 4,
  attachType: 8,
  flags: 12,
  /** tcx/cgroup: relative_fd or relative_id; perf_event: bpf_cookie (u64). */
  relative: 16,
  perfEventCookie: 16,
  expectedRevision: 24,
} as const;

export const LinkUpdateAttr = { linkFd: 0, newProgFd: 4, flags: 8, oldProgFd: 12 } as const;
export const LinkDetachAttr = { linkFd: 0 } as const;

export const ProgQueryAttr = {
  targetFd: 0,
  attachType: 4,
  queryFlags: 8,
  attachFlags: 12,
  progIds: 16,
  count: 24,
  progAttachFlags: 32,
  linkIds: 40,
  linkAttachFlags: 48,
  revision: 56,
} as const;
