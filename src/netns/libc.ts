import koffi, { type LibraryHandle } from 'koffi';
import { constants as osConstants } from 'node:os';

/**
 * The few libc calls that must run synchronously on the calling thread: setns(2) changes only that
 * thread's namespace, and a socket's namespace is fixed when socket(2) runs, so both have to happen
 * on the same thread without yielding to the event loop in between. `loadLibc` is the one place
 * libc is opened: src/bpf and the benches declare their own calls on the handle it returns.
 */
export interface Libc {
  open(path: string, flags: number): number;
  close(fd: number): number;
  setns(fd: number, nstype: number): number;
  socket(domain: number, type: number, protocol: number): number;
  setsockopt(fd: number, level: number, name: number, value: Buffer, len: number): number;
  bind(fd: number, addr: Buffer, len: number): number;
  listen(fd: number, backlog: number): number;
  connect(fd: number, addr: Buffer, len: number): number;
  send(fd: number, data: Buffer, len: number, flags: number): number;
  recv(fd: number, buf: Buffer, len: number, flags: number): number;
  ifNameToIndex(name: string): number;
  flock(fd: number, operation: number): number;
  strerror(errnum: number): string;
}

export const O_RDONLY = 0;
export const O_CLOEXEC = 0o2000000;
export const O_DIRECTORY = 0o200000;
export const LOCK_EX = 2;
export const CLONE_NEWNET = 0x40000000;
export const AF_INET = 2;
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const SO_REUSEADDR = 2;
export const EINPROGRESS = 115;
export const MSG_DONTWAIT = 0x40;

let handle: LibraryHandle | undefined;
let cached: Libc | undefined;
let strerror: ((errnum: number) => string) | undefined;

/** libc, opened on first use (importing a module that may call it never needs it). */
export function loadLibc(): LibraryHandle {
  if (process.platform !== 'linux') throw new Error(`libc calls need Linux, not ${process.platform}`);
  handle ??= koffi.load('libc.so.6');
  return handle;
}

export function libc(): Libc {
  if (cached) return cached;
  if (process.platform !== 'linux') throw new Error('network namespaces need Linux');
  const lib = loadLibc();
  const fn = <T>(decl: string): T => lib.func(decl) as T;
  strerror = fn<(errnum: number) => string>('const char *strerror(int errnum)');
  cached = {
    open: fn('int open(const char *path, int flags)'),
    close: fn('int close(int fd)'),
    setns: fn('int setns(int fd, int nstype)'),
    socket: fn('int socket(int domain, int type, int protocol)'),
    setsockopt: fn('int setsockopt(int fd, int level, int name, void *value, uint32_t len)'),
    bind: fn('int bind(int fd, void *addr, uint32_t len)'),
    listen: fn('int listen(int fd, int backlog)'),
    connect: fn('int connect(int fd, void *addr, uint32_t len)'),
    send: fn('long send(int fd, void *data, size_t len, int flags)'),
    recv: fn('long recv(int fd, void *buf, size_t len, int flags)'),
    ifNameToIndex: fn('unsigned int if_nametoindex(const char *name)'),
    flock: fn('int flock(int fd, int operation)'),
    strerror: (errnum: number) => strerror?.(errnum) ?? `errno ${errnum}`,
  };
  return cached;
}

export function lastErrno(): number {
  return koffi.errno();
}

export function errnoText(errno: number): string {
  return strerror?.(errno) ?? `errno ${errno}`;
}

/** `ECONNREFUSED` for 111: the name Node gives the same error when it comes asynchronously. */
export function errnoName(errno: number): string {
  const name = Object.entries(osConstants.errno).find(([, n]) => n === errno)?.[0];
  return name ?? `errno ${errno}`;
}

/** Throws `what: <strerror(errno)>` when a libc call returned -1. */
export function check(result: number, what: string): number {
  if (result >= 0) return result;
  const errno = koffi.errno();
  throw Object.assign(new Error(`${what}: ${errnoText(errno)}`), { errno });
}

/**
 * Runs `fn` holding an exclusive flock(2) on a directory. Synchronous on purpose: the callers
 * are synchronous map and link syncs that several agents run against one lab-wide object, and
 * the kernel drops the lock with the process, so a killed holder never leaves it taken.
 */
export function withDirectoryLock<T>(dir: string, fn: () => T): T {
  const c = libc();
  const fd = check(c.open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), `open ${dir}`);
  try {
    check(c.flock(fd, LOCK_EX), `flock ${dir}`);
    return fn();
  } finally {
    c.close(fd);
  }
}
