/**
 * An NFLOG reader: a NETLINK_NETFILTER socket bound to one nfnetlink_log group inside a project
 * network namespace. The socket is created on a thread that setns(2)-ed into the namespace (it stays
 * there for its whole life, whatever the thread does next), is non-blocking, and is read when libuv
 * reports it readable: the event loop never blocks.
 *
 * Configuration (NFULNL_MSG_CONFIG): PF_UNBIND + PF_BIND for AF_INET and AF_INET6 (no-ops on current
 * kernels, required on old ones), BIND the group, COPY_PACKET with a small copy range (IP header +
 * ports), a queue threshold with a short flush timeout, and per-instance sequence numbers: a gap in
 * NFULA_SEQ is exactly the number of messages the kernel could not deliver (socket buffer full,
 * ENOBUFS), which is reported as lost.
 *
 * Little-endian hosts (x86_64, arm64) for the netlink header; nfnetlink payloads are big-endian.
 */
import { watchReadable, type ReadableWatch } from '../../bpf/sys.js';
import { check, lastErrno, libc, SOCK_CLOEXEC, SOCK_NONBLOCK, SOL_SOCKET } from '../../netns/libc.js';
import { withNetns } from '../../netns/setns.js';
import { ackErrno, netlinkAttribute, netlinkRequest, NLM_F_ACK, NLMSG_HDRLEN } from '../../netns/netlink.js';
import type { PacketTuple } from '../events.js';

const AF_NETLINK = 16;
const AF_UNSPEC = 0;
const AF_INET = 2;
const AF_INET6 = 10;
const SOCK_RAW = 3;
const NETLINK_NETFILTER = 12;
const SO_RCVBUF = 8;
const MSG_DONTWAIT = 0x40;
const EAGAIN = 11;
const EINTR = 4;
const ENOBUFS = 105;

const NFNL_SUBSYS_ULOG = 4;
const NFULNL_MSG_PACKET = 0;
const NFULNL_MSG_CONFIG = 1;

const NFULA_CFG_CMD = 1;
const NFULA_CFG_MODE = 2;
const NFULA_CFG_NLBUFSIZ = 3;
const NFULA_CFG_TIMEOUT = 4;
const NFULA_CFG_QTHRESH = 5;
const NFULA_CFG_FLAGS = 6;
const NFULNL_CFG_CMD_BIND = 1;
const NFULNL_CFG_CMD_PF_BIND = 3;
const NFULNL_CFG_CMD_PF_UNBIND = 4;
const NFULNL_COPY_PACKET = 2;
const NFULNL_CFG_F_SEQ = 0x0001;

const NFULA_PACKET_HDR = 1;
const NFULA_TIMESTAMP = 3;
const NFULA_IFINDEX_INDEV = 4;
const NFULA_IFINDEX_OUTDEV = 5;
const NFULA_PAYLOAD = 9;
const NFULA_PREFIX = 10;
const NFULA_SEQ = 12;
const NLA_TYPE_MASK = 0x3fff;

/** One logged packet, decoded. */
export interface NflogPacket extends PacketTuple {
  /** Milliseconds since the epoch: NFULA_TIMESTAMP when the kernel had one, else receive time. */
  time: number;
  /** The rule's prefix, without the terminating NUL. */
  prefix: string;
  family: 4 | 6;
  /** Netfilter hook number (NF_INET_FORWARD = 2, …). */
  hook: number;
  indev: number;
  outdev: number;
  /** The packet's length on the wire at layer 3 (from the IP header; the copy is truncated). */
  bytes: number;
}

export interface NflogOptions {
  /** Project namespace (`sy-…`) whose NFLOG messages to read. */
  netns: string;
  /** nfnetlink_log group; default 1 (the backends' NFLOG_GROUP). */
  group?: number;
  /** Bytes of each packet copied to us; default 64. */
  copyRange?: number;
  /** Messages batched in the kernel before a send (rules may lower it); default 16. */
  queueThreshold?: number;
  /** Longest a batch waits in the kernel, in 1/100 s; default 10 (100 ms). */
  flushTimeout?: number;
  /** Socket receive buffer; default 1 MiB (capped by net.core.rmem_max). */
  receiveBuffer?: number;
  onPacket(packet: NflogPacket): void;
  /** Messages the kernel dropped (`where`: `nflog-enobufs` for sequence gaps). */
  onLost(count: number, where: string): void;
}

export interface NflogReader {
  readonly stats: { received: number; lost: number; enobufs: number; malformed: number };
  close(): void;
}

function be32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v);
  return b;
}

function be16(v: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(v);
  return b;
}

/** An NFULNL_MSG_CONFIG request: struct nfgenmsg (family, version 0, group big-endian), then `attrs`. */
function configMessage(seq: number, family: number, group: number, attrs: Buffer[]): Buffer {
  const nfgen = Buffer.alloc(4);
  nfgen.writeUInt8(family, 0);
  nfgen.writeUInt16BE(group, 2);
  return netlinkRequest(
    (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG,
    NLM_F_ACK,
    seq,
    Buffer.concat([nfgen, ...attrs]),
  );
}

function ipv4Text(b: Buffer, off: number): string {
  return `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
}

function ipv6Text(b: Buffer, off: number): string {
  const groups: string[] = [];
  for (let i = 0; i < 8; i++) groups.push(b.readUInt16BE(off + 2 * i).toString(16));
  // Compress the longest run of zero groups, as inet_ntop does.
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen && j - i > 1) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

const PORTED = new Set([6, 17, 132, 136]);

/** IPv4/IPv6 header (and the ports of TCP, UDP, SCTP, UDP-Lite) from a truncated copy. */
export function parseIpPayload(
  p: Buffer,
): Pick<NflogPacket, 'family' | 'protocol' | 'src' | 'dst' | 'sport' | 'dport' | 'bytes'> | undefined {
  if (p.length < 1) return undefined;
  const version = p[0]! >> 4;
  let protocol: number;
  let src: string;
  let dst: string;
  let l4: number;
  let bytes: number;
  let family: 4 | 6;
  if (version === 4) {
    if (p.length < 20) return undefined;
    family = 4;
    l4 = (p[0]! & 0x0f) * 4;
    bytes = p.readUInt16BE(2);
    protocol = p[9]!;
    src = ipv4Text(p, 12);
    dst = ipv4Text(p, 16);
    // A later fragment carries no ports.
    if ((p.readUInt16BE(6) & 0x1fff) !== 0) l4 = -1;
  } else if (version === 6) {
    if (p.length < 40) return undefined;
    family = 6;
    l4 = 40;
    bytes = p.readUInt16BE(4) + 40;
    protocol = p[6]!;
    src = ipv6Text(p, 8);
    dst = ipv6Text(p, 24);
  } else return undefined;
  let sport = 0;
  let dport = 0;
  if (l4 >= 0 && PORTED.has(protocol) && p.length >= l4 + 4) {
    sport = p.readUInt16BE(l4);
    dport = p.readUInt16BE(l4 + 2);
  }
  return { family, protocol, src, dst, sport, dport, bytes };
}

interface Decoded {
  packet?: NflogPacket;
  seq?: number;
}

/** One NFULNL_MSG_PACKET body (after the nlmsghdr): nfgenmsg + attributes. */
export function decodePacketMessage(body: Buffer, now = Date.now()): Decoded {
  let prefix = '';
  let payload: Buffer | undefined;
  let time: number | undefined;
  let hook = -1;
  let indev = 0;
  let outdev = 0;
  let seq: number | undefined;
  for (let off = 4; off + 4 <= body.length;) {
    const len = body.readUInt16LE(off);
    const type = body.readUInt16LE(off + 2) & NLA_TYPE_MASK;
    if (len < 4 || off + len > body.length) break;
    const data = body.subarray(off + 4, off + len);
    switch (type) {
      case NFULA_PACKET_HDR:
        if (data.length >= 3) hook = data[2]!;
        break;
      case NFULA_TIMESTAMP:
        if (data.length >= 16)
          time = Number(data.readBigUInt64BE(0)) * 1000 + Math.floor(Number(data.readBigUInt64BE(8)) / 1000);
        break;
      case NFULA_IFINDEX_INDEV:
        if (data.length >= 4) indev = data.readUInt32BE(0);
        break;
      case NFULA_IFINDEX_OUTDEV:
        if (data.length >= 4) outdev = data.readUInt32BE(0);
        break;
      case NFULA_PAYLOAD:
        payload = data;
        break;
      case NFULA_PREFIX: {
        const nul = data.indexOf(0);
        prefix = data.subarray(0, nul < 0 ? data.length : nul).toString('utf8');
        break;
      }
      case NFULA_SEQ:
        if (data.length >= 4) seq = data.readUInt32BE(0);
        break;
    }
    off += (len + 3) & ~3;
  }
  const ip = payload ? parseIpPayload(payload) : undefined;
  if (!ip) return seq === undefined ? {} : { seq };
  return {
    packet: { time: time ?? now, prefix, hook, indev, outdev, ...ip },
    ...(seq === undefined ? {} : { seq }),
  };
}

/** At most this many recv() calls per readability callback, so a flood cannot starve the loop. */
const RECV_BURST = 64;

class Reader implements NflogReader {
  readonly stats = { received: 0, lost: 0, enobufs: 0, malformed: 0 };
  private readonly buffer = Buffer.alloc(256 * 1024);
  private watch: ReadableWatch | undefined;
  private closed = false;
  private nextSeq: number | undefined;

  constructor(
    private readonly fd: number,
    private readonly opts: NflogOptions,
  ) {
    this.watch = watchReadable(fd, () => this.drain());
  }

  private lose(count: number, where: string): void {
    if (count <= 0) return;
    this.stats.lost += count;
    this.opts.onLost(count, where);
  }

  private drain(): void {
    const c = libc();
    for (let i = 0; i < RECV_BURST && !this.closed; i++) {
      const n = c.recv(this.fd, this.buffer, this.buffer.length, MSG_DONTWAIT);
      if (n < 0) {
        const errno = lastErrno();
        if (errno === EAGAIN || errno === EINTR) return;
        if (errno === ENOBUFS) {
          // The kernel dropped messages; the sequence gap on the next message says how many.
          this.stats.enobufs++;
          continue;
        }
        return;
      }
      if (n === 0) return;
      this.parse(n);
    }
  }

  private parse(n: number): void {
    const now = Date.now();
    for (let off = 0; off + NLMSG_HDRLEN <= n;) {
      const len = this.buffer.readUInt32LE(off);
      const type = this.buffer.readUInt16LE(off + 4);
      if (len < NLMSG_HDRLEN || off + len > n) break;
      if (type === (NFNL_SUBSYS_ULOG << 8) + NFULNL_MSG_PACKET) {
        const d = decodePacketMessage(this.buffer.subarray(off + NLMSG_HDRLEN, off + len), now);
        if (d.seq !== undefined) {
          if (this.nextSeq !== undefined) this.lose((d.seq - this.nextSeq) >>> 0, 'nflog-enobufs');
          this.nextSeq = (d.seq + 1) >>> 0;
        }
        if (d.packet) {
          this.stats.received++;
          this.opts.onPacket(d.packet);
        } else this.stats.malformed++;
      }
      // Anything else (NLMSG_DONE closing a batch, late acks) carries nothing for us.
      off += (len + 3) & ~3;
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.watch?.close();
    this.watch = undefined;
    libc().close(this.fd);
  }
}

/**
 * Sends one config request and reads its ack. Netlink requests are handled in the sender's
 * context, so the ack is queued by the time send() returns: this never waits for long.
 */
function configure(
  fd: number,
  seq: number,
  family: number,
  group: number,
  attrs: Buffer[],
  what: string,
): void {
  const c = libc();
  const msg = configMessage(seq, family, group, attrs);
  check(c.send(fd, msg, msg.length, 0), `nflog send (${what})`);
  const reply = Buffer.alloc(4096);
  const deadline = Date.now() + 2000;
  for (;;) {
    const n = c.recv(fd, reply, reply.length, MSG_DONTWAIT);
    if (n < 0) {
      const errno = lastErrno();
      if (errno !== EAGAIN && errno !== EINTR) check(n, `nflog receive (${what})`);
      if (Date.now() > deadline) throw new Error(`nflog: no answer to ${what}`);
      continue;
    }
    const errno = ackErrno(reply, n, seq);
    if (errno === 0) return;
    if (errno !== undefined) throw Object.assign(new Error(`nflog ${what}: ${c.strerror(errno)}`), { errno });
  }
}

/**
 * Opens the reader inside `opts.netns` and starts delivering. Throws (with errno's text) when the
 * group is already bound by another socket in that namespace (EBUSY) or the namespace is missing.
 */
export function openNflog(opts: NflogOptions): NflogReader {
  if (!opts.netns.startsWith('sy-'))
    throw new Error(`refusing to read NFLOG outside a project namespace (${opts.netns})`);
  const group = opts.group ?? 1;
  const c = libc();
  const fd = withNetns(opts.netns, () =>
    check(c.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_NETFILTER), 'nflog socket'),
  );
  try {
    const addr = Buffer.alloc(12);
    addr.writeUInt16LE(AF_NETLINK, 0);
    check(c.bind(fd, addr, addr.length), 'nflog bind');
    const rcvbuf = Buffer.alloc(4);
    rcvbuf.writeInt32LE(opts.receiveBuffer ?? 1 << 20);
    // Best effort: the kernel caps it at net.core.rmem_max.
    c.setsockopt(fd, SOL_SOCKET, SO_RCVBUF, rcvbuf, 4);
    let seq = 0;
    for (const family of [AF_INET, AF_INET6]) {
      configure(
        fd,
        ++seq,
        family,
        0,
        [netlinkAttribute(NFULA_CFG_CMD, Buffer.from([NFULNL_CFG_CMD_PF_UNBIND]))],
        'PF_UNBIND',
      );
      configure(
        fd,
        ++seq,
        family,
        0,
        [netlinkAttribute(NFULA_CFG_CMD, Buffer.from([NFULNL_CFG_CMD_PF_BIND]))],
        'PF_BIND',
      );
    }
    configure(
      fd,
      ++seq,
      AF_UNSPEC,
      group,
      [netlinkAttribute(NFULA_CFG_CMD, Buffer.from([NFULNL_CFG_CMD_BIND]))],
      `BIND group ${group}`,
    );
    const mode = Buffer.alloc(6);
    mode.writeUInt32BE(opts.copyRange ?? 64, 0);
    mode.writeUInt8(NFULNL_COPY_PACKET, 4);
    configure(
      fd,
      ++seq,
      AF_UNSPEC,
      group,
      [
        netlinkAttribute(NFULA_CFG_MODE, mode),
        netlinkAttribute(NFULA_CFG_NLBUFSIZ, be32(65536)),
        netlinkAttribute(NFULA_CFG_QTHRESH, be32(opts.queueThreshold ?? 16)),
        netlinkAttribute(NFULA_CFG_TIMEOUT, be32(opts.flushTimeout ?? 10)),
        netlinkAttribute(NFULA_CFG_FLAGS, be16(NFULNL_CFG_F_SEQ)),
      ],
      `configure group ${group}`,
    );
  } catch (e) {
    c.close(fd);
    throw e;
  }
  return new Reader(fd, opts);
}
