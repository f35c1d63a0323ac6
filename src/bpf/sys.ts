import koffi from 'koffi';
import { loadLibc } from '../netns/libc.js';

/**
 * The only module of src/bpf that talks to libc (opened once, by src/netns/libc.ts). Everything else sees plain numbers, Buffers and native
 * blocks with known addresses, so the rest of src/bpf can be read without knowing koffi.
 */

const SYSCALL_NUMBERS: Record<string, { bpf: number; perfEventOpen: number }> = {
  x64: { bpf: 321, perfEventOpen: 298 },
  arm64: { bpf: 280, perfEventOpen: 241 },
};

function syscallNumbers(): { bpf: number; perfEventOpen: number } {
  const numbers = SYSCALL_NUMBERS[process.arch];
  if (!numbers)
    throw new Error(`src/bpf supports x64 and arm64 Linux, not ${process.platform}/${process.arch}`);
  return numbers;
}

type NativeFunction = (...args: unknown[]) => unknown;

interface Libc {
  bpf: NativeFunction & { async: (...args: unknown[]) => void };
  perfEventOpen: NativeFunction;
  close: NativeFunction;
  mmap: NativeFunction;
  munmap: NativeFunction;
  ifNameToIndex: NativeFunction;
  mount: NativeFunction;
  getppid: NativeFunction;
  sysconf: NativeFunction;
}

let cachedLibc: Libc | undefined;

/** Loaded on first use so importing src/bpf (for the assembler, say) never needs libc. */
function libc(): Libc {
  if (cachedLibc) return cachedLibc;
  if (process.platform !== 'linux') throw new Error('src/bpf needs Linux (bpf(2) is a Linux syscall)');
  const nr = syscallNumbers();
  const lib = loadLibc();
  // glibc's syscall() is variadic, but on x86_64 and arm64 it is an assembly stub that only moves
  // integer registers, so fixed-arity declarations are ABI-compatible and skip koffi's per-call
  // variadic type parsing (map operations are on the benchmark's hot path).
  const bpfCall = lib.func('long syscall(long nr, long cmd, void *attr, ulong size)');
  const perfCall = lib.func(
    'long syscall(long nr, void *attr, long pid, long cpu, long group_fd, ulong flags)',
  );
  cachedLibc = {
    bpf: Object.assign((cmd: unknown, attr: unknown, size: unknown) => bpfCall(nr.bpf, cmd, attr, size), {
      async: (cmd: unknown, attr: unknown, size: unknown, done: unknown) =>
        (bpfCall.async as NativeFunction)(nr.bpf, cmd, attr, size, done),
    }),
    perfEventOpen: (attr, pid, cpu, group, flags) => perfCall(nr.perfEventOpen, attr, pid, cpu, group, flags),
    close: lib.func('int close(int fd)'),
    mmap: lib.func('void *mmap(void *addr, size_t length, int prot, int flags, int fd, int64_t offset)'),
    munmap: lib.func('int munmap(void *addr, size_t length)'),
    ifNameToIndex: lib.func('unsigned int if_nametoindex(const char *name)'),
    mount: lib.func(
      'int mount(const char *source, const char *target, const char *fstype, ulong flags, const char *data)',
    ),
    getppid: lib.func('int getppid()'),
    sysconf: lib.func('long sysconf(int name)'),
  };
  return cachedLibc;
}

/**
 * errno of the libc call that just returned. koffi documents `koffi.errno()` for this; it must be
 * read before any other native call on this thread, which every caller here does.
 */
function lastErrno(): number {
  return koffi.errno();
}

/** Result of a raw syscall: the non-negative return value, or the negated errno. */
export type SyscallResult = number;

/** Memory outside the V8 heap: its address can be written into bpf_attr and stays put. */
export class NativeBlock {
  readonly size: number;
  readonly address: bigint;
  readonly buffer: Buffer;
  private pointer: unknown;

  constructor(size: number) {
    if (!Number.isInteger(size) || size <= 0)
      throw new RangeError(`native block size must be > 0, got ${size}`);
    this.size = size;
    this.pointer = koffi.alloc('uint8_t', size);
    this.address = koffi.address(this.pointer);
    this.buffer = Buffer.from(koffi.view(this.pointer, size));
    this.buffer.fill(0);
  }

  /** The koffi pointer, for passing the block itself as a `void *` argument. */
  get native(): unknown {
    if (this.pointer === null) throw new Error('native block used after free');
    return this.pointer;
  }

  free(): void {
    if (this.pointer === null) return;
    koffi.free(this.pointer);
    this.pointer = null;
  }
}

/**
 * A growable block reused by synchronous calls. JavaScript runs one synchronous bpf(2) call at a
 * time, so one scratch area serves every map operation without per-call allocation.
 */
export class ScratchArea {
  private block: NativeBlock;

  constructor(initialSize = 4096) {
    this.block = new NativeBlock(initialSize);
  }

  /** A block of at least `size` bytes; contents are undefined, earlier views become stale. */
  reserve(size: number): NativeBlock {
    if (size > this.block.size) {
      let next = this.block.size;
      while (next < size) next *= 2;
      this.block.free();
      this.block = new NativeBlock(next);
    }
    return this.block;
  }
}

export const scratch = new ScratchArea();

/** bpf(2) with the attr block; returns the result or -errno, never throws. */
export function rawBpf(cmd: number, attr: NativeBlock, size: number): SyscallResult {
  const result = Number(libc().bpf(cmd, attr.native, size));
  return result < 0 ? -lastErrno() : result;
}

/**
 * bpf(2) on a koffi worker thread, for calls that run long (PROG_TEST_RUN with a large repeat)
 * while the main thread keeps serving the event loop, e.g. draining a ring buffer.
 */
export function rawBpfAsync(cmd: number, attr: NativeBlock, size: number): Promise<SyscallResult> {
  return new Promise((resolve, reject) => {
    libc().bpf.async(cmd, attr.native, size, (err: unknown, result: unknown) => {
      if (err) return reject(err instanceof Error ? err : new Error(String(err)));
      // koffi restores the worker thread's errno around this callback.
      const value = Number(result);
      resolve(value < 0 ? -lastErrno() : value);
    });
  });
}

export function rawPerfEventOpen(
  attr: NativeBlock,
  pid: number,
  cpu: number,
  groupFd: number,
  flags: number,
): SyscallResult {
  const result = Number(libc().perfEventOpen(attr.native, pid, cpu, groupFd, flags));
  return result < 0 ? -lastErrno() : result;
}

export function closeFd(fd: number): void {
  if (fd >= 0) libc().close(fd);
}

export const Prot = { READ: 1, WRITE: 2 } as const;
const MAP_SHARED = 0x01;
const MAP_FAILED = 0xffffffffffffffffn;

/** A shared mapping of a file descriptor (ring buffer pages). */
export class Mapping {
  readonly buffer: Buffer;
  private pointer: unknown;

  private constructor(
    pointer: unknown,
    readonly length: number,
  ) {
    this.pointer = pointer;
    this.buffer = Buffer.from(koffi.view(pointer, length));
  }

  static map(fd: number, length: number, prot: number, offset: number): Mapping | number {
    const pointer = libc().mmap(null, length, prot, MAP_SHARED, fd, offset);
    const address = pointer === null ? 0n : koffi.address(pointer);
    if (address === MAP_FAILED || address === 0n) return -lastErrno();
    return new Mapping(pointer, length);
  }

  unmap(): void {
    if (this.pointer === null) return;
    libc().munmap(this.pointer, this.length);
    this.pointer = null;
  }
}

/** if_nametoindex(3) in the calling thread's network namespace; 0 when absent. */
export function ifNameToIndex(name: string): number {
  return Number(libc().ifNameToIndex(name));
}

export function rawMount(
  source: string,
  target: string,
  fstype: string,
  flags: number,
  data: string | null,
): SyscallResult {
  const result = Number(libc().mount(source, target, fstype, flags, data));
  return result < 0 ? -lastErrno() : result;
}

/** getppid(2): a syscall cheap and harmless enough for tracepoint tests to trigger on demand. */
export function triggerGetppid(): number {
  return Number(libc().getppid());
}

export function errnoNumbers(): Record<string, number> {
  return koffi.os.errno;
}

const SC_PAGESIZE = 30;
let cachedPageSize: number | undefined;

export function pageSize(): number {
  cachedPageSize ??= Number(libc().sysconf(SC_PAGESIZE));
  return cachedPageSize;
}

export interface ReadableWatch {
  close(): void;
}

/**
 * Calls `onReadable` from Node's event loop whenever `fd` polls readable: libuv's own epoll
 * watches the fd, so waiting costs no thread and no CPU.
 */
export function watchReadable(fd: number, onReadable: () => void): ReadableWatch {
  // koffi passes poll status and events; only readability was asked for, so neither matters.
  const handle = koffi.node.poll(fd, { readable: true }, () => onReadable());
  return { close: () => handle.close() };
}
