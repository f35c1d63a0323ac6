import { isIPv4, isIPv6 } from 'node:net';
import { parseAddress } from '../util/ip.js';
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
  /** 6: an IPv6-only socket on `::` (beside the IPv4 one on the same port); default 4. */
  family?: 4 | 6;
}

const AF_INET6 = 10;
const IPPROTO_IPV6 = 41;
const IPV6_V6ONLY = 26;

/** struct sockaddr_in6 (28 bytes) for an IPv6 address. */
function sockaddr6(port: number, address = '::'): Buffer {
  const a = isIPv6(address) ? parseAddress(address) : undefined;
  if (a?.family !== 6) throw new Error(`not an IPv6 address: ${address}`);
  const sa = Buffer.alloc(28);
  sa.writeUInt16LE(AF_INET6, 0);
  sa.writeUInt16BE(port, 2);
  Buffer.from(a.value.toString(16).padStart(32, '0'), 'hex').copy(sa, 8);
  return sa;
}

/** The socket address for `address` of either family, with its length. */
function sockaddrOf(port: number, address: string): Buffer {
  return address.includes(':') ? sockaddr6(port, address) : sockaddr(port, address);
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
 * Opens bound (and for TCP listening) sockets on 0.0.0.0 (or `::`, IPv6 only) inside a namespace and returns their
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
        const v6 = s.family === 6;
        const fd = check(c.socket(v6 ? AF_INET6 : AF_INET, type, 0), `socket ${s.protocol}`);
        fds.push(fd);
        const one = Buffer.alloc(4);
        one.writeInt32LE(1);
        check(c.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, one, 4), 'setsockopt SO_REUSEADDR');
        // IPv6 only, so the IPv4 socket on the same port keeps IPv4 (no mapped addresses here).
        if (v6) check(c.setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, one, 4), 'setsockopt IPV6_V6ONLY');
        const sa = v6 ? sockaddr6(s.port) : sockaddr(s.port);
        check(c.bind(fd, sa, sa.length), `bind ${v6 ? '[::]:' : ''}${s.port}/${s.protocol} in ${netns}`);
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
      const fd = c.socket(s.address.includes(':') ? AF_INET6 : AF_INET, type, 0);
      if (fd < 0) return { error: `socket: ${errnoText(lastErrno())}` };
      const sa = sockaddrOf(s.port, s.address);
      if (c.connect(fd, sa, sa.length) !== 0) {
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
