import { Attr, ATTR_SIZE, ProgLoadAttr, syncAttr, TestRunAttr } from './attr.js';
import type { AssembledProgram } from './asm/builder.js';
import { commentAt, disassemble } from './asm/disasm.js';
import {
  encodeInstructions,
  INSN_SIZE,
  totalSlots,
  type Instruction,
  type MapReference,
} from './asm/instruction.js';
import { context, getFdById, objInfo, scratchLayout, tryBpf } from './commands.js';
import {
  ATTACH_TYPES,
  BpfCommand,
  checkObjectName,
  OBJ_NAME_LEN,
  PROGRAM_TYPES,
  type AttachType,
  type ProgramType,
} from './constants.js';
import { bpfError, errnoName, UnsupportedFeatureError, VerifierError, type ErrorContext } from './errors.js';
import { explainFailure } from './features.js';
import { cString, type MapBase } from './maps.js';
import { BpfObject } from './object.js';
import { openPinnedFd } from './pins.js';
import { closeFd, NativeBlock, rawBpfAsync, type SyscallResult } from './sys.js';
import { listingExcerpt, parseVerifierLog } from './verifier.js';
import {
  kernelBtf,
  loadBtf,
  programBtf,
  resolveCoreRelocations,
  typeByName,
  type Btf,
  type ProgramBtf,
} from './btf/index.js';

export interface ProgramSpec {
  /** Up to 15 characters; shows in bpftool and error messages. */
  name?: string;
  type: ProgramType;
  /** Required by hooks that check it at load time: cgroup sock_addr hooks, tcx, XDP links. */
  expectedAttachType?: AttachType;
  /** Default 'GPL': several helpers (ringbuf, trace) are only offered to GPL-compatible programs. */
  license?: string;
  instructions: AssembledProgram | readonly Instruction[];
  /** Maps the instructions name in ldMap/ldMapValue, resolved to fds here. */
  maps?: Readonly<Record<string, MapBase>>;
  /** BPF_F_* program flags. */
  flags?: number;
  /** Verifier log level used when a load fails (1 = instructions; 2 = also states). */
  logLevel?: 1 | 2;
  /**
   * Keep the whole verifier log of a rejection (growing the buffer up to 64 MiB, verifying again
   * each time); default: its last 64 KiB, which end with the reason.
   */
  fullLog?: boolean;
  /**
   * Load program BTF with func_info/line_info (default true): verifier logs and `bpftool prog
   * dump` then name our functions and show the generator's comments as source lines.
   */
  btf?: boolean;
  /**
   * Tracing programs: the kernel function (fentry/fexit) or tracepoint (tp_btf, attach type
   * trace_raw_tp) they attach to, looked up in the kernel's BTF for attach_btf_id.
   */
  attachTo?: string;
  /** BTF that CO-RE field references (Assembler.ldxField) resolve against; default the kernel's. */
  coreBtf?: Btf;
}

export interface ProgramInfo {
  type: number;
  typeName: string;
  id: number;
  /** The kernel's 8-byte hash of the translated program, hex. */
  tag: string;
  name: string;
  translatedBytes: number;
  jitedBytes: number;
  mapIds: number;
  verifiedInstructions: number;
  /** Program BTF object id (0: loaded without BTF). */
  btfId: number;
  funcInfoCount: number;
  lineInfoCount: number;
}

export interface TestRunOptions {
  /** Packet bytes (XDP/tc need at least an Ethernet header). */
  data?: Buffer;
  /** Room for the output packet; defaults to the input size plus 256 bytes. */
  dataOutSize?: number;
  /** Runs the program this many times; durationNs is the average per run. */
  repeat?: number;
  /** Context input (struct xdp_md, __sk_buff, ...). */
  context?: Buffer;
  contextOutSize?: number;
  flags?: number;
  cpu?: number;
}

export interface TestRunResult {
  /** The program's return value (sign-extended: tcx's TCX_NEXT is -1). */
  retval: number;
  /** Average nanoseconds per run, as measured by the kernel. */
  durationNs: number;
  dataOut: Buffer;
  contextOut: Buffer | undefined;
}

const programTypeNames = new Map<number, string>(Object.entries(PROGRAM_TYPES).map(([n, id]) => [id, n]));

const LOG_START = 64 * 1024;
const LOG_MAX = 64 * 1024 * 1024;
const ENOSPC = 28;
const EAGAIN = 11;
/**
 * The verifier gives up with EAGAIN when a signal reaches the loading thread (a profiler's
 * SIGPROF, a child's SIGCHLD): the load is tried again, as libbpf does, this many times.
 */
const SIGNAL_RETRIES = 5;

function instructionsOf(program: AssembledProgram | readonly Instruction[]): readonly Instruction[] {
  return 'instructions' in program ? program.instructions : program;
}

function resolveMaps(spec: ProgramSpec): (ref: MapReference) => number {
  return (ref) => {
    const map = spec.maps?.[ref.name];
    if (!map) {
      const known = Object.keys(spec.maps ?? {});
      throw new Error(
        `program '${spec.name ?? ''}' uses map '${ref.name}' but spec.maps ${known.length ? `has only ${known.join(', ')}` : 'is empty'}`,
      );
    }
    return map.fd;
  };
}

/**
 * The verifier's rejection of `program`: its reason, the listing with the failing instruction
 * marked, and what the generator said that code does (the comment in force there).
 */
function rejection(
  errno: number,
  where: ErrorContext,
  program: AssembledProgram | readonly Instruction[],
  log: string,
): VerifierError {
  const finding = parseVerifierLog(log);
  const listing = disassemble(program, { mark: finding.instructionIndex });
  const doing =
    'instructions' in program && finding.instructionIndex !== undefined
      ? commentAt(program, finding.instructionIndex)
      : undefined;
  return new VerifierError(errno, where, {
    ...finding,
    log,
    listing,
    excerpt: listingExcerpt(listing),
    ...(doing ? { doing } : {}),
  });
}

interface RawLoad {
  result: SyscallResult;
  trueSize: number;
}

/** Whether this kernel takes program BTF; learnt from the first BTF_LOAD and kept. */
let programBtfSupported = true;

/**
 * Builds and loads program BTF. Kernels (or sandboxes) that refuse BTF_LOAD get the program
 * without it: names in bpftool are a convenience, not a reason to fail a load.
 */
function loadProgramBtf(
  name: string,
  program: AssembledProgram | readonly Instruction[],
): (ProgramBtf & { fd: number }) | undefined {
  if (!programBtfSupported) return undefined;
  const info = programBtf(name, program);
  try {
    return { ...info, fd: loadBtf(info.blob, `BTF of program '${name}'`) };
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ENOTSUPP' || code === 'EOPNOTSUPP' || code === 'ENOSYS') {
      programBtfSupported = false;
      return undefined;
    }
    throw err;
  }
}

/** attach_btf_id of spec.attachTo: a kernel function, or btf_trace_<name> for tp_btf. */
function attachBtfId(spec: ProgramSpec): number {
  const target = spec.attachTo as string;
  const rawTp = spec.expectedAttachType === 'trace_raw_tp';
  const type = rawTp
    ? typeByName(kernelBtf(), 'typedef', `btf_trace_${target}`)
    : typeByName(kernelBtf(), 'func', target);
  if (!type)
    throw new Error(
      `program '${spec.name ?? ''}': the kernel's BTF has no ${rawTp ? `tracepoint '${target}'` : `function '${target}'`} to attach to`,
    );
  return type.id;
}

/** What a load does next: done (`fd`), or try again with a verifier log of `logSize` bytes. */
type LoadStep = { fd: number; logSize?: undefined } | { fd?: undefined; logSize: number };

/** 8-byte aligned regions in one block. */
function layoutOf(sizes: readonly number[]): { size: number; offsets: number[] } {
  const offsets: number[] = [];
  let end = 0;
  for (const size of sizes) {
    offsets.push(end);
    end += Math.ceil(Math.max(size, 1) / 8) * 8;
  }
  return { size: end, offsets };
}

/**
 * One program load, whichever thread makes the calls: builds the attr, and decides after each
 * attempt whether to stop (a program, or an error that says why) or to ask again with a log.
 */
class LoadSession {
  readonly name: string;
  readonly subject: string;
  readonly sizes: number[];
  private readonly code: Buffer;
  private readonly license: Buffer;
  private readonly attachBtfId: number;
  private readonly info: (ProgramBtf & { fd: number }) | undefined;
  private btfFd = -1;
  private firstErrno = 0;

  constructor(private readonly spec: ProgramSpec) {
    this.name = checkObjectName(spec.name ?? '', 'program');
    this.subject = `program '${this.name}' (${spec.type})`;
    const instructions = instructionsOf(spec.instructions);
    const relocated = resolveCoreRelocations(instructions, () => spec.coreBtf ?? kernelBtf());
    this.code = encodeInstructions(relocated ?? instructions, resolveMaps(spec));
    this.license = Buffer.from(`${spec.license ?? 'GPL'}\0`, 'utf8');
    this.attachBtfId = spec.attachTo === undefined ? 0 : attachBtfId(spec);
    this.info = spec.btf === false ? undefined : loadProgramBtf(this.name, spec.instructions);
    if (this.info) this.btfFd = this.info.fd;
    const lines = this.info?.lineInfo.length ?? 0;
    this.sizes = [this.code.length, this.license.length, this.info?.funcInfo.length ?? 0, lines];
  }

  /** Closes the program BTF fd: the loaded program holds its own reference. */
  release(): void {
    if (this.btfFd >= 0) closeFd(this.btfFd);
    this.btfFd = -1;
  }

  /** Writes code and license at `offsets` of `block` and the load's attributes into `attr`. */
  fill(attr: Attr, block: NativeBlock, offsets: readonly number[], logBlock: NativeBlock | undefined): Attr {
    const { spec } = this;
    const [insnsOff = 0, licenseOff = 0, funcOff = 0, lineOff = 0] = offsets;
    this.code.copy(block.buffer, insnsOff);
    this.license.copy(block.buffer, licenseOff);
    if (this.info && this.btfFd >= 0) {
      this.info.funcInfo.copy(block.buffer, funcOff);
      this.info.lineInfo.copy(block.buffer, lineOff);
      attr
        .u32(ProgLoadAttr.progBtfFd, this.btfFd)
        .u32(ProgLoadAttr.funcInfoRecSize, this.info.funcInfoRecSize)
        .u64(ProgLoadAttr.funcInfo, block.address + BigInt(funcOff))
        .u32(ProgLoadAttr.funcInfoCnt, this.info.funcCount)
        .u32(ProgLoadAttr.lineInfoRecSize, this.info.lineInfoRecSize)
        .u64(ProgLoadAttr.lineInfo, block.address + BigInt(lineOff))
        .u32(ProgLoadAttr.lineInfoCnt, this.info.lineCount);
    }
    if (this.attachBtfId) attr.u32(ProgLoadAttr.attachBtfId, this.attachBtfId);
    attr
      .u32(ProgLoadAttr.progType, PROGRAM_TYPES[spec.type])
      .u32(ProgLoadAttr.insnCnt, this.code.length / INSN_SIZE)
      .u64(ProgLoadAttr.insns, block.address + BigInt(insnsOff))
      .u64(ProgLoadAttr.license, block.address + BigInt(licenseOff))
      .u32(ProgLoadAttr.progFlags, spec.flags ?? 0)
      .name(ProgLoadAttr.progName, this.name, OBJ_NAME_LEN)
      .u32(
        ProgLoadAttr.expectedAttachType,
        spec.expectedAttachType ? ATTACH_TYPES[spec.expectedAttachType] : 0,
      )
      .u32(ProgLoadAttr.logTrueSize, 0);
    if (logBlock) {
      logBlock.buffer.fill(0, 0, 1);
      attr
        .u32(ProgLoadAttr.logLevel, this.spec.logLevel ?? 1)
        .u32(ProgLoadAttr.logSize, logBlock.size)
        .u64(ProgLoadAttr.logBuf, logBlock.address);
    }
    return attr;
  }

  private where(): ErrorContext {
    return context(BpfCommand.PROG_LOAD, this.subject);
  }

  /** After the attempt without a log. */
  first(attempt: RawLoad): LoadStep {
    if (attempt.result >= 0) return { fd: attempt.result };
    this.firstErrno = -attempt.result;
    const code = errnoName(this.firstErrno);
    if (code === 'EPERM' && this.spec.type === 'tracing' && this.spec.expectedAttachType !== 'trace_raw_tp')
      throw new UnsupportedFeatureError(
        'fentry/fexit',
        `${this.subject}: fentry/fexit to '${this.spec.attachTo ?? '?'}' refused (EPERM) although other BPF loads work: this kernel is locked down or cannot patch function entries (ftrace direct calls); attach to a tracepoint with BTF (tp_btf, attach type trace_raw_tp) instead`,
      );
    if (code === 'EPERM' || code === 'EBADF' || code === 'EFAULT' || code === 'ENOMEM')
      throw bpfError(this.firstErrno, this.where());
    // Over the complexity limit: a second verification (minutes, with a log) would only say so.
    if (code === 'E2BIG' && !this.spec.fullLog)
      throw new VerifierError(this.firstErrno, this.where(), {
        reason: `the program is too complex for the verifier (over its limit of 1M processed instructions, or too long)`,
        instructionIndex: undefined,
        log: '',
        listing: '',
        excerpt: '',
      });
    return { logSize: LOG_START };
  }

  /** After an attempt with a log of `logBlock.size` bytes. */
  logged(attempt: RawLoad, logBlock: NativeBlock): LoadStep {
    if (attempt.result >= 0) return { fd: attempt.result };
    const truncated = attempt.result === -ENOSPC;
    if (truncated && this.spec.fullLog && logBlock.size < LOG_MAX)
      return { logSize: Math.min(LOG_MAX, Math.max(logBlock.size * 4, attempt.trueSize + 1)) };
    // A truncated log replaced the verifier's errno with ENOSPC: report the first attempt's.
    const errno = truncated ? this.firstErrno : -attempt.result;
    const log = cString(logBlock.buffer);
    if (!log.trim()) throw bpfError(errno, this.where());
    // A helper this kernel does not know is a feature it lacks: say which.
    throw explainFailure(rejection(errno, this.where(), this.spec.instructions, log));
  }
}

/** A loaded program. Attach it with the functions in links.ts; test it with testRun. */
export class Program extends BpfObject {
  readonly type: number;
  readonly name: string;

  /**
   * Loads a program. Without a log first (fast path); if the kernel refuses, loads again with a
   * verifier log and throws VerifierError with the reason and the failing instruction marked in
   * the listing. The log kept is its last LOG_START bytes (the kernel's rolling log ends with the
   * reason) unless `spec.fullLog` asks for all of it; a program over the verifier's complexity
   * limit (E2BIG) is not verified a second time for a log nobody asked for.
   */
  static load(spec: ProgramSpec): Program {
    const session = new LoadSession(spec);
    try {
      const { block, offsets } = scratchLayout(session.sizes);
      const run = (attr: Attr): RawLoad => {
        let result = tryBpf(BpfCommand.PROG_LOAD, attr);
        for (let retry = 0; result === -EAGAIN && retry < SIGNAL_RETRIES; retry++)
          result = tryBpf(BpfCommand.PROG_LOAD, attr);
        return { result, trueSize: attr.readU32(ProgLoadAttr.logTrueSize) };
      };
      let step = session.first(run(session.fill(syncAttr.reset(), block, offsets, undefined)));
      while (step.logSize !== undefined) {
        const logBlock = new NativeBlock(step.logSize);
        try {
          const { block: again } = scratchLayout(session.sizes);
          step = session.logged(run(session.fill(syncAttr.reset(), again, offsets, logBlock)), logBlock);
        } finally {
          logBlock.free();
        }
      }
      return new Program(step.fd, spec.type, session.name);
    } finally {
      session.release();
    }
  }

  /**
   * Program.load with every bpf(2) call on a koffi worker thread: the verifier may run for seconds
   * on a large program, and the caller's event loop (an agent's API, its flow readers) keeps
   * running meanwhile. Uses its own native memory, never the shared scratch area.
   */
  static async loadAsync(spec: ProgramSpec): Promise<Program> {
    const session = new LoadSession(spec);
    const { size, offsets } = layoutOf(session.sizes);
    const block = new NativeBlock(size);
    const attr = new Attr();
    try {
      const run = async (logBlock: NativeBlock | undefined): Promise<RawLoad> => {
        let result = -EAGAIN;
        for (let retry = 0; result === -EAGAIN && retry <= SIGNAL_RETRIES; retry++) {
          session.fill(attr.reset(), block, offsets, logBlock);
          result = await rawBpfAsync(BpfCommand.PROG_LOAD, attr.block, ATTR_SIZE);
        }
        return { result, trueSize: attr.readU32(ProgLoadAttr.logTrueSize) };
      };
      let step = session.first(await run(undefined));
      while (step.logSize !== undefined) {
        const logBlock = new NativeBlock(step.logSize);
        try {
          step = session.logged(await run(logBlock), logBlock);
        } finally {
          logBlock.free();
        }
      }
      return new Program(step.fd, spec.type, session.name);
    } finally {
      session.release();
      attr.block.free();
      block.free();
    }
  }

  /** Adopts a program fd (takes ownership). */
  static fromFd(fd: number): Program {
    const info = readProgramInfo(fd);
    return new Program(fd, info.type, info.name);
  }

  static fromPin(path: string): Program {
    return Program.fromFd(openPinnedFd(path));
  }

  static fromId(id: number): Program {
    return Program.fromFd(getFdById(BpfCommand.PROG_GET_FD_BY_ID, id, `program id ${id}`));
  }

  private constructor(fd: number, type: ProgramType | number, name: string) {
    super(fd);
    this.type = typeof type === 'number' ? type : PROGRAM_TYPES[type];
    this.name = name;
  }

  get typeName(): string {
    return programTypeNames.get(this.type) ?? `type ${this.type}`;
  }

  get description(): string {
    return `program '${this.name}' (${this.typeName})`;
  }

  info(): ProgramInfo {
    return readProgramInfo(this.fd);
  }

  get id(): number {
    return this.info().id;
  }

  /** BPF_PROG_TEST_RUN: runs the program in the kernel on `data` without attaching it. */
  testRun(options: TestRunOptions = {}): TestRunResult {
    const layout = testRunLayout(options);
    const { block, offsets } = scratchLayout(layout.sizes);
    const attr = fillTestRun(syncAttr.reset(), this.fd, options, layout, block, offsets);
    const result = tryBpf(BpfCommand.PROG_TEST_RUN, attr);
    return finishTestRun(result, attr, layout, block, offsets, this.description);
  }

  /**
   * testRun on a worker thread: the main thread stays free (to drain a ring buffer the program
   * writes to, for instance) while a long `repeat` runs.
   */
  async testRunAsync(options: TestRunOptions = {}): Promise<TestRunResult> {
    const layout = testRunLayout(options);
    const { size, offsets } = layoutOf(layout.sizes);
    const block = new NativeBlock(size);
    const attr = new Attr();
    try {
      fillTestRun(attr, this.fd, options, layout, block, offsets);
      const result: SyscallResult = await rawBpfAsync(BpfCommand.PROG_TEST_RUN, attr.block, ATTR_SIZE);
      return finishTestRun(result, attr, layout, block, offsets, this.description);
    } finally {
      attr.block.free();
      block.free();
    }
  }
}

interface TestRunLayout {
  data: Buffer;
  dataOutSize: number;
  ctx: Buffer | undefined;
  ctxOutSize: number;
  sizes: number[];
}

function testRunLayout(options: TestRunOptions): TestRunLayout {
  const data = options.data ?? Buffer.alloc(0);
  const dataOutSize = options.dataOutSize ?? data.length + 256;
  const ctx = options.context;
  const ctxOutSize = options.contextOutSize ?? (ctx ? ctx.length : 0);
  return {
    data,
    dataOutSize,
    ctx,
    ctxOutSize,
    sizes: [data.length, dataOutSize, ctx?.length ?? 0, ctxOutSize],
  };
}

function fillTestRun(
  attr: Attr,
  fd: number,
  options: TestRunOptions,
  layout: TestRunLayout,
  block: NativeBlock,
  offsets: number[],
): Attr {
  const [dataIn = 0, dataOut = 0, ctxIn = 0, ctxOut = 0] = offsets;
  layout.data.copy(block.buffer, dataIn);
  if (layout.ctx) layout.ctx.copy(block.buffer, ctxIn);
  attr
    .u32(TestRunAttr.progFd, fd)
    .u32(TestRunAttr.repeat, options.repeat ?? 1)
    .u32(TestRunAttr.flags, options.flags ?? 0)
    .u32(TestRunAttr.cpu, options.cpu ?? 0);
  if (layout.data.length > 0)
    attr
      .u32(TestRunAttr.dataSizeIn, layout.data.length)
      .u64(TestRunAttr.dataIn, block.address + BigInt(dataIn));
  if (layout.dataOutSize > 0)
    attr
      .u32(TestRunAttr.dataSizeOut, layout.dataOutSize)
      .u64(TestRunAttr.dataOut, block.address + BigInt(dataOut));
  if (layout.ctx)
    attr.u32(TestRunAttr.ctxSizeIn, layout.ctx.length).u64(TestRunAttr.ctxIn, block.address + BigInt(ctxIn));
  if (layout.ctxOutSize > 0)
    attr
      .u32(TestRunAttr.ctxSizeOut, layout.ctxOutSize)
      .u64(TestRunAttr.ctxOut, block.address + BigInt(ctxOut));
  return attr;
}

function finishTestRun(
  result: number,
  attr: Attr,
  layout: TestRunLayout,
  block: NativeBlock,
  offsets: number[],
  subject: string,
): TestRunResult {
  if (result < 0) throw bpfError(-result, context(BpfCommand.PROG_TEST_RUN, subject));
  const [, dataOut = 0, , ctxOut = 0] = offsets;
  const outSize = Math.min(attr.readU32(TestRunAttr.dataSizeOut), layout.dataOutSize);
  const ctxSize = Math.min(attr.readU32(TestRunAttr.ctxSizeOut), layout.ctxOutSize);
  return {
    retval: attr.readU32(TestRunAttr.retval) | 0,
    durationNs: attr.readU32(TestRunAttr.duration),
    dataOut: Buffer.from(block.buffer.subarray(dataOut, dataOut + outSize)),
    contextOut:
      layout.ctxOutSize > 0 ? Buffer.from(block.buffer.subarray(ctxOut, ctxOut + ctxSize)) : undefined,
  };
}

/** struct bpf_prog_info, the fields up to verified_insns. */
export function readProgramInfo(fd: number): ProgramInfo {
  const info = objInfo(fd, 224, `program fd ${fd}`);
  const type = info.readUInt32LE(0);
  return {
    type,
    typeName: programTypeNames.get(type) ?? `type ${type}`,
    id: info.readUInt32LE(4),
    tag: info.subarray(8, 16).toString('hex'),
    translatedBytes: info.readUInt32LE(20),
    jitedBytes: info.readUInt32LE(16),
    mapIds: info.readUInt32LE(52),
    name: cString(info.subarray(64, 80)),
    verifiedInstructions: info.readUInt32LE(216),
    btfId: info.readUInt32LE(128),
    funcInfoCount: info.readUInt32LE(144),
    lineInfoCount: info.readUInt32LE(148),
  };
}

/** Instruction count of a program (slots), for checks before loading. */
export function instructionSlots(program: AssembledProgram | readonly Instruction[]): number {
  return totalSlots(instructionsOf(program));
}
