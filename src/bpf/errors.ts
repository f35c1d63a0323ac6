import { errnoNumbers } from './sys.js';

/** ENOTSUPP is kernel-internal (524) and leaks out of bpf(2); libc has no name for it. */
const KERNEL_ERRNO_NAMES: Record<number, string> = { 524: 'ENOTSUPP' };

let errnoNames: Record<number, string> | undefined;

export function errnoName(errno: number): string {
  if (!errnoNames) {
    errnoNames = { ...KERNEL_ERRNO_NAMES };
    for (const [name, value] of Object.entries(errnoNumbers())) {
      // Several names share a number (EAGAIN/EWOULDBLOCK); keep the first, the common one.
      errnoNames[value] ??= name;
    }
  }
  return errnoNames[errno] ?? `errno ${errno}`;
}

/** What was being done when the kernel said no; drives the hint. */
export interface ErrorContext {
  /** e.g. 'BPF_MAP_UPDATE_ELEM' or 'perf_event_open'. */
  operation: string;
  /** Human subject: "map 'deny' (lpm_trie)" or "program 'xdp_drop' (xdp)". */
  subject?: string;
}

const GENERIC_HINTS: Record<string, string> = {
  EPERM: 'run as root: bpf(2) needs CAP_BPF plus CAP_NET_ADMIN / CAP_PERFMON (or CAP_SYS_ADMIN)',
  EACCES: 'permission denied: run as root; for pins check the bpffs mount and directory modes',
  ENOENT: 'no such object: the key, pin path or id does not exist',
  EEXIST:
    'already exists: the pin path is taken, the key exists (update mode noexist) or a program is already attached',
  EBADF: 'bad file descriptor: the object was closed, or the fd is not the kind of BPF object expected',
  ENOMEM: 'out of memory: reduce max_entries; on kernels before 5.11 also raise RLIMIT_MEMLOCK (ulimit -l)',
  E2BIG: 'too big: the map is full (raise max_entries), or a key/value/program exceeds a kernel limit',
  ENOSPC: 'no space left: the map is full (raise max_entries) or an output buffer is too small',
  EINVAL: 'the kernel rejected an argument: check types, sizes and flags against the kernel version',
  EBUSY: 'busy: another program holds this hook exclusively (e.g. XDP attached via netlink); detach it first',
  ENODEV:
    'no such device: ifindex is per network namespace; resolve and attach inside the namespace (withNetns)',
  ENXIO:
    'no such device: ifindex is per network namespace; resolve and attach inside the namespace (withNetns)',
  EOPNOTSUPP: 'not supported by this map/program type, attach point or kernel version',
  ENOTSUPP: 'not supported by this map/program type, attach point or kernel version',
  EFAULT: 'bad address passed to the kernel: a bug in src/bpf; please report it',
  EAGAIN: 'resource temporarily unavailable: retry',
  ESRCH: 'no such process or object id',
  EMFILE: 'too many open files: close BPF objects you no longer need or raise the fd limit',
  ENOTDIR: 'a path component is not a directory',
};

/** Hints where the generic meaning of an errno would mislead. */
function specificHint(code: string, operation: string): string | undefined {
  const op = operation.replace(/^BPF_/, '');
  if (op === 'MAP_UPDATE_ELEM' || op === 'MAP_UPDATE_BATCH') {
    if (code === 'E2BIG' || code === 'ENOSPC' || code === 'ENOMEM')
      return 'the map is full: raise max_entries (or delete stale entries first)';
    if (code === 'EINVAL') return 'invalid update: check the key/value encoding and the update mode flags';
  }
  if (op === 'MAP_CREATE') {
    if (code === 'EINVAL')
      return 'invalid map attributes: key/value sizes, max_entries > 0 and flags must suit the type (lpm_trie needs BPF_F_NO_PREALLOC and a key of 4 + address bytes; ringbuf needs a power-of-two size that is a page multiple, key and value 0)';
    if (code === 'E2BIG') return 'key or value size exceeds the limit for this map type';
  }
  if (op === 'PROG_LOAD') {
    if (code === 'E2BIG') return 'program too large: split it (tail calls) or simplify it';
    if (code === 'EINVAL') return 'invalid program: check program type, expected attach type and license';
  }
  if (op === 'LINK_CREATE' || op === 'PROG_ATTACH') {
    if (code === 'EINVAL')
      return 'this program cannot attach here: program type / expected attach type must match the hook';
    if (code === 'EEXIST') return 'a program is already attached to this hook in exclusive mode';
  }
  if (op === 'LINK_UPDATE' && code === 'EINVAL')
    return 'the new program must have the same type and expected attach type as the old one';
  if (op === 'MAP_LOOKUP_BATCH' && code === 'ENOSPC')
    return 'batch buffer smaller than a hash bucket: retry with a larger count';
  if (op === 'PROG_TEST_RUN') {
    if (code === 'ENOSPC') return 'data_out too small for the packet the program produced';
    if (code === 'EINVAL')
      return 'test input invalid for this program type (XDP needs at least 14 bytes of Ethernet header; flags such as BPF_F_TEST_RUN_ON_CPU suit only some types)';
    if (code === 'ENOTSUPP' || code === 'EOPNOTSUPP')
      return 'this program type does not support BPF_PROG_TEST_RUN';
  }
  if (op === 'OBJ_PIN' || op === 'OBJ_GET') {
    if (code === 'EPERM' || code === 'EACCES' || code === 'EINVAL')
      return 'pins live on a bpffs mount: call ensureBpffs() and pin under /sys/fs/bpf';
  }
  if (op === 'perf_event_open' && code === 'ENOENT')
    return 'no such tracepoint: check category/name in tracefs events/';
  return undefined;
}

/** A failed bpf(2) or related syscall, with the errno, its name, and what to do about it. */
export class BpfError extends Error {
  readonly errno: number;
  readonly code: string;
  readonly operation: string;
  readonly hint: string;

  constructor(errno: number, context: ErrorContext, detail?: string) {
    const code = errnoName(errno);
    const hint = specificHint(code, context.operation) ?? GENERIC_HINTS[code] ?? 'unexpected error';
    const subject = context.subject ? ` ${context.subject}` : '';
    super(`${context.operation}${subject} failed: ${code}${detail ? ` (${detail})` : ''}: ${hint}`);
    this.name = new.target.name;
    this.errno = errno;
    this.code = code;
    this.operation = context.operation;
    this.hint = hint;
  }
}

export class BpfPermissionError extends BpfError {}
export class BpfNotFoundError extends BpfError {}
export class BpfExistsError extends BpfError {}
/** The map is full or a buffer is too small (ENOSPC, E2BIG). */
export class BpfCapacityError extends BpfError {}
export class BpfInvalidArgumentError extends BpfError {}
export class BpfBusyError extends BpfError {}
export class BpfUnsupportedError extends BpfError {}

/** Builds the most specific error class for an errno, so callers can `instanceof` it. */
export function bpfError(errno: number, context: ErrorContext, detail?: string): BpfError {
  switch (errnoName(errno)) {
    case 'EPERM':
    case 'EACCES':
      return new BpfPermissionError(errno, context, detail);
    case 'ENOENT':
      return new BpfNotFoundError(errno, context, detail);
    case 'EEXIST':
      return new BpfExistsError(errno, context, detail);
    case 'ENOSPC':
    case 'E2BIG':
      return new BpfCapacityError(errno, context, detail);
    case 'EINVAL':
      return new BpfInvalidArgumentError(errno, context, detail);
    case 'EBUSY':
      return new BpfBusyError(errno, context, detail);
    case 'EOPNOTSUPP':
    case 'ENOTSUPP':
      return new BpfUnsupportedError(errno, context, detail);
    default:
      return new BpfError(errno, context, detail);
  }
}

/** The verifier rejected a program; the message holds its reason and the failing instruction. */
export class VerifierError extends BpfError {
  /** The verifier's own words, e.g. "R0 !read_ok". */
  readonly reason: string;
  /** Index (in 8-byte instruction slots) of the instruction the verifier stopped at, when known. */
  readonly instructionIndex: number | undefined;
  /** The full verifier log. */
  readonly log: string;
  /** Disassembly with the failing instruction marked by `-->`. */
  readonly listing: string;
  /** What the generated code at that instruction does (its `Assembler.comment`), when known. */
  readonly doing: string | undefined;
  /** One line: which program, where, and the verifier's reason. */
  readonly summary: string;

  constructor(
    errno: number,
    context: ErrorContext,
    report: {
      reason: string;
      instructionIndex: number | undefined;
      log: string;
      listing: string;
      excerpt: string;
      doing?: string;
    },
  ) {
    super(errno, context, 'verifier rejected the program');
    const where = report.instructionIndex === undefined ? '' : ` at instruction ${report.instructionIndex}`;
    const doing = report.doing ? ` (${report.doing})` : '';
    this.summary = `${context.subject ?? 'program'} rejected by the verifier${where}${doing}: ${report.reason}`;
    this.message = report.excerpt ? `${this.summary}\n${report.excerpt}` : this.summary;
    this.reason = report.reason;
    this.instructionIndex = report.instructionIndex;
    this.log = report.log;
    this.listing = report.listing;
    this.doing = report.doing;
  }

  /** The message with the whole verifier log after it, for when the excerpt is not enough. */
  withLog(): string {
    return `${this.message}\n--- verifier log ---\n${this.log.trimEnd()}`;
  }
}

/** A feature the running kernel lacks, with the version that added it. */
export class UnsupportedFeatureError extends Error {
  constructor(
    readonly feature: string,
    detail: string,
    options?: ErrorOptions,
  ) {
    super(`kernel feature '${feature}' is not available: ${detail}`, options);
    this.name = new.target.name;
  }
}

/**
 * A load, attach or map creation failed because the running kernel lacks a feature: says so in
 * those words ("this kernel (6.1.0) lacks tcx (needs Linux 6.6)"); the kernel's own error, an
 * errno or a verifier rejection, is the `cause`.
 */
export class MissingKernelFeatureError extends UnsupportedFeatureError {
  constructor(
    feature: string,
    readonly kernel: string,
    readonly since: string,
    cause: unknown,
  ) {
    super(feature, `needs Linux ${since}`, { cause });
    this.message = `this kernel (${kernel}) lacks ${feature} (needs Linux ${since})`;
  }
}
