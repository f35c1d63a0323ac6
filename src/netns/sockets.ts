import { isIPv4 } from 'node:net';
import {
  AF_INET,
  check,
  EINPROGRESS,
  errnoName,
  errnoText,
  lastErrno,
  libc,
  MSG_DONTWAIT,
  SO_REUSEADDR,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
  SOCK_NONBLOCK,
  SOCK_STREAM,
  SOL_SOCKET,
} from './libc.js';
import { withNetns } from './setns.js';

export interface ListenSpec {
  port: number;
  protocol: 'TCP' | 'UDP';
}

function sockaddr(port: number, address = '0.0.0.0'): Buffer {
  if (!isIPv4(address)) throw new Error(`not an IPv4 address: ${address}`);
  const sa = Buffer.alloc(16);
  sa.writeUInt16LE(AF_INET, 0);
  sa.writeUInt16BE(port, 2);
  address.split('.').forEach((octet, i) => sa.writeUInt8(Number(octet), 4 + i));
  return sa;
}

/**
 * Opens bound (and for TCP listening) IPv4 sockets on 0.0.0.0 inside a namespace and returns their
 * fds, in `specs` order. Node's own listen() binds on a later tick, after we would have switched
 * back, so the sockets are made here and handed to Node (`listen({fd})`, `bind({fd})`).
 */
export function openListeners(netns: string, specs: readonly ListenSpec[]): number[] {
  const c = libc();
  const fds: number[] = [];
  try {
    withNetns(netns, () => {
      for (const s of specs) {
        const type = (s.protocol === 'TCP' ? SOCK_STREAM : SOCK_DGRAM) | SOCK_NONBLOCK | SOCK_CLOEXEC;
        const fd = check(c.socket(AF_INET, type, 0), `socket ${s.protocol}`);
        fds.push(fd);
        const one = Buffer.alloc(4);
        one.writeInt32LE(1);
        check(c.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, one, 4), 'setsockopt SO_REUSEADDR');
        check(c.bind(fd, sockaddr(s.port), 16), `bind ${s.port}/${s.protocol} in ${netns}`);
        if (s.protocol === 'TCP') check(c.listen(fd, 511), `listen ${s.port}/TCP in ${netns}`);
      }
    });
  } catch (e) {
    for (const fd of fds) c.close(fd);
    throw e;
  }
  return fds;
}

export function closeFd(fd: number): void {
  libc().close(fd);
}

export interface ConnectSpec {
  address: string;
  port: number;
  protocol: 'TCP' | 'UDP';
  /** UDP: a first datagram sent right away, from inside the namespace (and the caller's cgroup). */
  payload?: Buffer;
}

/** A socket whose connect was issued, or why it could not be. */
export type Connecting = { fd: number } | { error: string };

/**
 * Creates sockets inside a namespace and starts a non-blocking connect on each, so the SYN (or
 * first datagram) leaves from the namespace while the calling thread is there, and cgroup socket
 * hooks see the process in whatever cgroup the caller joined. The caller hands the fds to Node to
 * learn the outcome. Failures that happen at once (no route) come back per target.
 */
export function startConnects(netns: string, specs: readonly ConnectSpec[]): Connecting[] {
  const c = libc();
  return withNetns(netns, () =>
    specs.map((s): Connecting => {
      const type = (s.protocol === 'TCP' ? SOCK_STREAM : SOCK_DGRAM) | SOCK_NONBLOCK | SOCK_CLOEXEC;
      const fd = c.socket(AF_INET, type, 0);
      if (fd < 0) return { error: `socket: ${errnoText(lastErrno())}` };
      if (c.connect(fd, sockaddr(s.port, s.address), 16) !== 0) {
        const errno = lastErrno();
        if (errno !== EINPROGRESS) {
          c.close(fd);
          // By name, as Node reports the same failure when it comes later (ECONNREFUSED…).
          return { error: errnoName(errno) };
        }
      }
      if (s.payload) c.send(fd, s.payload, s.payload.length, MSG_DONTWAIT);
      return { fd };
    }),
  );
}

/** Sends on a connected socket without blocking; errors are left for the receive side to report. */
export function sendOn(fd: number, payload: Buffer): void {
  libc().send(fd, payload, payload.length, MSG_DONTWAIT);
}
