/**
 * Reading counters out of nf_tables over netlink, without forking nft: the elements of one set
 * with each element's counter (an NFT_MSG_GETSETELEM dump), a set's handle (NFT_MSG_GETSET) and
 * one named counter object (NFT_MSG_GETOBJ). `nft -j list set` costs ~150 ms of CPU for 10k elements, almost all of it
 * nft parsing and printing; the dump is the same data in binary, read in a few milliseconds.
 *
 * Synchronous on purpose: a netlink dump is produced by the kernel inside each recv(2), so there
 * is nothing to wait for but that work, and the socket must be created in the node's namespace
 * (withNetns) anyway. A receive timeout bounds a kernel that never answers. Netlink headers are
 * host order (little-endian hosts, see src/netns/netlink.ts); nf_tables payloads are big-endian.
 */
import { check, lastErrno, libc, SOCK_CLOEXEC, SOL_SOCKET } from '../../netns/libc.js';
import {
  AF_NETLINK,
  netlinkAttribute,
  netlinkRequest,
  NLM_F_ACK,
  NLMSG_ERROR,
  NLMSG_HDRLEN,
  SOCK_RAW,
} from '../../netns/netlink.js';
import { withNetns } from '../../netns/setns.js';
import type { KernelElement } from './elements.js';
import type { SetElementChange } from './member-delta.js';

const NETLINK_NETFILTER = 12;
const SO_RCVTIMEO = 20;
const SO_RCVBUFFORCE = 33;
const EINTR = 4;
const ENOBUFS = 105;
/**
 * Receive buffer per message of a batch: each message asks for its acknowledgement, and the
 * kernel queues them all before send(2) returns. An ack is a small skb, but the socket is charged
 * its truesize (~0.7–1 KiB); at the default 208 KiB a batch of a few hundred rules lost acks
 * (ENOBUFS) after nf_tables had committed it. nft sizes its socket for the batch the same way.
 */
const RECEIVE_BUFFER_PER_MESSAGE = 2048;

const NLMSG_DONE = 3;
const NLM_F_MULTI = 0x2;
const NLM_F_DUMP_INTR = 0x10;
const NLM_F_DUMP = 0x300;
const NLA_TYPE_MASK = 0x3fff;

const NFNL_SUBSYS_NFTABLES = 10;
const NFT_MSG_NEWSET = 9;
const NFT_MSG_GETSET = 10;
const NFT_MSG_NEWSETELEM = 12;
const NFT_MSG_GETSETELEM = 13;
const NFT_MSG_DELSETELEM = 14;
const NFT_MSG_NEWOBJ = 18;
const NFT_MSG_GETOBJ = 19;
const NFPROTO_INET = 1;

const NFTA_SET_TABLE = 1;
const NFTA_SET_NAME = 2;
const NFTA_SET_HANDLE = 16;
const NFTA_SET_ELEM_LIST_TABLE = 1;
const NFTA_SET_ELEM_LIST_SET = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS = 3;
const NFTA_LIST_ELEM = 1;
const NFTA_SET_ELEM_KEY = 1;
const NFTA_SET_ELEM_DATA = 2;
const NFTA_SET_ELEM_FLAGS = 3;
const NFTA_SET_ELEM_USERDATA = 6;
const NFTA_DATA_VERDICT = 2;
const NFTA_VERDICT_CODE = 1;
const NFTA_VERDICT_CHAIN = 2;
const NFT_JUMP = -3;
const NFT_GOTO = -4;
const NFNL_MSG_BATCH_BEGIN = 0x10;
const NFNL_MSG_BATCH_END = 0x11;
const NLM_F_CREATE = 0x400;
const NLA_F_NESTED = 0x8000;
/** nft's element user data: NFTNL_UDATA_SET_ELEM_FLAGS (1), 4 bytes, NFTNL_SET_ELEM_F_INTERVAL_OPEN. */
const OPEN_INTERVAL_USERDATA = Buffer.from([1, 4, 1, 0, 0, 0]);
/** Elements per NEWSETELEM/DELSETELEM message, well inside one netlink message's size. */
const ELEMENTS_PER_MESSAGE = 256;
const NFTA_SET_ELEM_EXPR = 7;
const NFTA_SET_ELEM_EXPRESSIONS = 10;
const NFTA_DATA_VALUE = 1;
const NFTA_EXPR_NAME = 1;
const NFTA_EXPR_DATA = 2;
const NFTA_COUNTER_BYTES = 1;
const NFTA_COUNTER_PACKETS = 2;
const NFTA_OBJ_TABLE = 1;
const NFTA_OBJ_NAME = 2;
const NFTA_OBJ_TYPE = 3;
const NFTA_OBJ_DATA = 4;
const NFTA_OBJ_HANDLE = 6;
const NFT_OBJECT_COUNTER = 1;

/** Longest a recv may wait for the kernel before the read is given up (ms). */
const RECEIVE_TIMEOUT_MS = 2000;
/** The kernel fills dump messages of at most 32 KiB; one recv never returns more. */
const RECEIVE_BUFFER = 64 * 1024;

export interface Counted {
  packets: number;
  bytes: number;
}

/** One set element: its key as the kernel stores it, and its counter (zero without one). */
export interface CountedElement extends Counted {
  key: Buffer;
}

/** One set element as the dump carries it: where its key lies in `buf`, and its counter. */
export type ElementVisitor = (
  buf: Buffer,
  keyOffset: number,
  keyLength: number,
  packets: number,
  bytes: number,
) => void;

// The parsers below walk attributes by offset, without closures or copies: a dump of tens of
// thousands of elements is read every second, and allocation per attribute is what it would cost.

/** Length of the attribute at `off` (0 when malformed against `end`). */
function attrLength(buf: Buffer, off: number, end: number): number {
  if (off + 4 > end) return 0;
  const len = buf.readUInt16LE(off);
  return len < 4 || off + len > end ? 0 : len;
}

function attrType(buf: Buffer, off: number): number {
  return buf.readUInt16LE(off + 2) & NLA_TYPE_MASK;
}

const next = (off: number, len: number): number => off + ((len + 3) & ~3);

/** A u64 attribute's value (big-endian), exact below 2^53. */
function u64(buf: Buffer, off: number): number {
  return buf.readUInt32BE(off) * 0x1_0000_0000 + buf.readUInt32BE(off + 4);
}

/** Counter totals found by the last counterAt / expressionAt call. */
let packets = 0;
let bytes = 0;

/** NFTA_COUNTER_* attributes in `[start, end)` → packets, bytes. */
function counterAt(buf: Buffer, start: number, end: number): void {
  packets = 0;
  bytes = 0;
  for (let off = start, len; (len = attrLength(buf, off, end)) > 0; off = next(off, len)) {
    if (len < 12) continue;
    const type = attrType(buf, off);
    if (type === NFTA_COUNTER_PACKETS) packets = u64(buf, off + 4);
    else if (type === NFTA_COUNTER_BYTES) bytes = u64(buf, off + 4);
  }
}

const COUNTER = Buffer.from('counter\0', 'latin1');

/** An expression (NFTA_EXPR_NAME, NFTA_EXPR_DATA) in `[start, end)`: true when it is a counter, its totals set. */
function expressionAt(buf: Buffer, start: number, end: number): boolean {
  let isCounter = false;
  let dataOff = -1;
  let dataEnd = -1;
  for (let off = start, len; (len = attrLength(buf, off, end)) > 0; off = next(off, len)) {
    const type = attrType(buf, off);
    if (type === NFTA_EXPR_NAME)
      isCounter = buf.compare(COUNTER, 0, COUNTER.length, off + 4, off + 4 + COUNTER.length) === 0;
    else if (type === NFTA_EXPR_DATA) {
      dataOff = off + 4;
      dataEnd = off + len;
    }
  }
  if (!isCounter || dataOff < 0) return false;
  counterAt(buf, dataOff, dataEnd);
  return true;
}

/** One NFTA_LIST_ELEM's attributes in `[start, end)` → the visitor. */
function elementAt(buf: Buffer, start: number, end: number, visit: ElementVisitor): void {
  let keyOff = -1;
  let keyLen = 0;
  let counted = false;
  for (let off = start, len; (len = attrLength(buf, off, end)) > 0; off = next(off, len)) {
    const type = attrType(buf, off);
    if (type === NFTA_SET_ELEM_KEY) {
      for (let k = off + 4, kl; (kl = attrLength(buf, k, off + len)) > 0; k = next(k, kl))
        if (attrType(buf, k) === NFTA_DATA_VALUE) {
          keyOff = k + 4;
          keyLen = kl - 4;
        }
    } else if (type === NFTA_SET_ELEM_EXPR) {
      // One expression on the set: NFTA_SET_ELEM_EXPR; several: a list of them.
      counted ||= expressionAt(buf, off + 4, off + len);
    } else if (type === NFTA_SET_ELEM_EXPRESSIONS) {
      for (let e = off + 4, el; !counted && (el = attrLength(buf, e, off + len)) > 0; e = next(e, el))
        if (attrType(buf, e) === NFTA_LIST_ELEM) counted = expressionAt(buf, e + 4, e + el);
    }
  }
  if (keyOff < 0) return;
  if (counted) visit(buf, keyOff, keyLen, packets, bytes);
  else visit(buf, keyOff, keyLen, 0, 0);
}

export interface ParsedMessages {
  /** The dump (or the answer) is complete: NLMSG_DONE, or a single-part reply. */
  done: boolean;
  /** A refusal: errno (ENOENT for a set or table that does not exist). */
  errno?: number;
  /** The ruleset changed while the kernel dumped: the parts may miss or repeat elements. */
  interrupted: boolean;
  /** A set's or object's handle (NFT_MSG_NEWSET, NFT_MSG_NEWOBJ): unique while the kernel runs. */
  handle?: number;
  /** A counter object's totals (NFT_MSG_NEWOBJ). */
  counter?: Counted;
}

const message = (type: number): number => (NFNL_SUBSYS_NFTABLES << 8) | type;

/**
 * Parses the netlink messages in `buf[0, length)`: set elements go to `onElement`; a set's or a
 * counter's answer is returned. Pure, for the unit tests; the socket below feeds it.
 */
export function parseMessages(buf: Buffer, length: number, onElement?: ElementVisitor): ParsedMessages {
  const out: ParsedMessages = { done: false, interrupted: false };
  for (let off = 0; off + NLMSG_HDRLEN <= length;) {
    const len = buf.readUInt32LE(off);
    if (len < NLMSG_HDRLEN || off + len > length) break;
    const type = buf.readUInt16LE(off + 4);
    const flags = buf.readUInt16LE(off + 6);
    const end = off + len;
    if (flags & NLM_F_DUMP_INTR) out.interrupted = true;
    // After the header: struct nfgenmsg (4 bytes), then the attributes.
    const attrs = off + NLMSG_HDRLEN + 4;
    if (type === NLMSG_DONE) out.done = true;
    else if (type === NLMSG_ERROR) {
      const error = buf.readInt32LE(off + NLMSG_HDRLEN);
      out.done = true;
      if (error !== 0) out.errno = -error;
    } else if (type === message(NFT_MSG_NEWSETELEM)) {
      for (let a = attrs, al; (al = attrLength(buf, a, end)) > 0; a = next(a, al)) {
        if (attrType(buf, a) !== NFTA_SET_ELEM_LIST_ELEMENTS || !onElement) continue;
        for (let e = a + 4, el; (el = attrLength(buf, e, a + al)) > 0; e = next(e, el))
          if (attrType(buf, e) === NFTA_LIST_ELEM) elementAt(buf, e + 4, e + el, onElement);
      }
      if (!(flags & NLM_F_MULTI)) out.done = true;
    } else if (type === message(NFT_MSG_NEWSET) || type === message(NFT_MSG_NEWOBJ)) {
      const handleType = type === message(NFT_MSG_NEWSET) ? NFTA_SET_HANDLE : NFTA_OBJ_HANDLE;
      for (let a = attrs, al; (al = attrLength(buf, a, end)) > 0; a = next(a, al)) {
        const t = attrType(buf, a);
        if (t === handleType && al >= 12) out.handle = u64(buf, a + 4);
        else if (t === NFTA_OBJ_DATA && type === message(NFT_MSG_NEWOBJ)) {
          counterAt(buf, a + 4, a + al);
          out.counter = { packets, bytes };
        }
      }
      if (!(flags & NLM_F_MULTI)) out.done = true;
    }
    off = next(off, len);
  }
  return out;
}

function nfgenmsg(): Buffer {
  // family, version (NFNETLINK_V0), resource id (big-endian, 0)
  return Buffer.from([NFPROTO_INET, 0, 0, 0]);
}

function cstring(s: string): Buffer {
  return Buffer.from(`${s}\0`, 'latin1');
}

function be32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v);
  return b;
}

const nested = (type: number, attrs: Buffer[]): Buffer =>
  netlinkAttribute(type | NLA_F_NESTED, Buffer.concat(attrs));

function be32signed(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(v);
  return b;
}

/** One NFTA_LIST_ELEM: key, flags, verdict (map elements), nft's user data (open intervals). */
export function elementAttribute(e: KernelElement): Buffer {
  const attrs = [nested(NFTA_SET_ELEM_KEY, [netlinkAttribute(NFTA_DATA_VALUE, e.key)])];
  if (e.flags !== 0) attrs.push(netlinkAttribute(NFTA_SET_ELEM_FLAGS, be32(e.flags)));
  if (e.verdict)
    attrs.push(
      nested(NFTA_SET_ELEM_DATA, [
        nested(NFTA_DATA_VERDICT, [
          netlinkAttribute(NFTA_VERDICT_CODE, be32signed(e.verdict.code === 'jump' ? NFT_JUMP : NFT_GOTO)),
          netlinkAttribute(NFTA_VERDICT_CHAIN, cstring(e.verdict.chain)),
        ]),
      ]),
    );
  if (e.open) attrs.push(netlinkAttribute(NFTA_SET_ELEM_USERDATA, OPEN_INTERVAL_USERDATA));
  return nested(NFTA_LIST_ELEM, attrs);
}

/** One message of an nf_tables batch (rule-batch.ts builds chains' and rules' messages). */
export interface BatchMessage {
  /** What it writes, as an error names it: `set NAME`, `chain NAME`, `rule 3 of chain NAME`. */
  object: string;
  /** Without the subsystem: NFT_MSG_NEWRULE, … */
  type: number;
  flags: number;
  /** struct nfgenmsg, then the attributes. */
  body: Buffer;
}

/** The body of an nf_tables message: struct nfgenmsg for family inet, then `attrs`. */
export function messageBody(attrs: readonly Buffer[]): Buffer {
  return Buffer.concat([nfgenmsg(), ...attrs]);
}

/** A batch's messages for `changes` to `table`'s sets: per set, flush, deletions, additions. */
export function elementMessages(table: string, changes: readonly SetElementChange[]): BatchMessage[] {
  const out: BatchMessage[] = [];
  for (const c of changes) {
    const head = [
      netlinkAttribute(NFTA_SET_ELEM_LIST_TABLE, cstring(table)),
      netlinkAttribute(NFTA_SET_ELEM_LIST_SET, cstring(c.name)),
    ];
    const push = (type: number, flags: number, elements?: readonly KernelElement[]): void => {
      const list = elements ? [nested(NFTA_SET_ELEM_LIST_ELEMENTS, elements.map(elementAttribute))] : [];
      out.push({ object: `${c.kind} ${c.name}`, type, flags, body: messageBody([...head, ...list]) });
    };
    // A DELSETELEM without elements flushes the set.
    if (c.flush) push(NFT_MSG_DELSETELEM, 0);
    for (let i = 0; i < c.remove.length; i += ELEMENTS_PER_MESSAGE)
      push(NFT_MSG_DELSETELEM, 0, c.remove.slice(i, i + ELEMENTS_PER_MESSAGE));
    for (let i = 0; i < c.add.length; i += ELEMENTS_PER_MESSAGE)
      push(NFT_MSG_NEWSETELEM, NLM_F_CREATE, c.add.slice(i, i + ELEMENTS_PER_MESSAGE));
  }
  return out;
}

/** The errno of every acknowledgement in `buf[0, length)`, by the sequence number it answers. */
export function parseAcks(buf: Buffer, length: number): Map<number, number> {
  const out = new Map<number, number>();
  for (let off = 0; off + NLMSG_HDRLEN <= length;) {
    const len = buf.readUInt32LE(off);
    if (len < NLMSG_HDRLEN || off + len > length) break;
    // struct nlmsgerr: int error, then the request's header (its seq at offset 8).
    if (buf.readUInt16LE(off + 4) === NLMSG_ERROR && len >= NLMSG_HDRLEN + 4 + NLMSG_HDRLEN)
      out.set(buf.readUInt32LE(off + NLMSG_HDRLEN + 4 + 8), -buf.readInt32LE(off + NLMSG_HDRLEN));
    off = next(off, len);
  }
  return out;
}

export class NftablesWriteError extends Error {
  constructor(
    message: string,
    readonly errno?: number,
    /**
     * False when nf_tables may have committed the batch all the same: its answer was lost
     * (ENOBUFS) or never came. The kernel then holds either the old or the new state, which
     * only a write of the whole table puts right.
     */
    readonly refused = true,
  ) {
    super(message);
    this.name = 'NftablesWriteError';
  }
}

export class NftablesReadError extends Error {
  constructor(
    message: string,
    readonly errno?: number,
  ) {
    super(message);
    this.name = 'NftablesReadError';
  }
}

/** A NETLINK_NETFILTER socket in one namespace, for reads; close() it when done. */
export class NftablesNetlink {
  private readonly fd: number;
  private seq = 0;
  private readonly buffer = Buffer.alloc(RECEIVE_BUFFER);

  constructor(netns: string) {
    if (!netns.startsWith('sy-'))
      throw new Error(`refusing to read nf_tables outside a project namespace (${netns})`);
    const c = libc();
    this.fd = withNetns(netns, () =>
      check(c.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER), 'nf_tables netlink socket'),
    );
    const timeout = Buffer.alloc(16); // struct timeval { long tv_sec; long tv_usec; }
    timeout.writeBigInt64LE(BigInt(Math.floor(RECEIVE_TIMEOUT_MS / 1000)), 0);
    timeout.writeBigInt64LE(BigInt((RECEIVE_TIMEOUT_MS % 1000) * 1000), 8);
    c.setsockopt(this.fd, SOL_SOCKET, SO_RCVTIMEO, timeout, timeout.length);
  }

  /** Sends one request and reads until its answer is complete. */
  private exchange(
    what: string,
    type: number,
    flags: number,
    attrs: Buffer[],
    onElement?: ElementVisitor,
  ): ParsedMessages {
    const c = libc();
    const seq = ++this.seq;
    const msg = netlinkRequest(message(type), flags, seq, Buffer.concat([nfgenmsg(), ...attrs]));
    check(c.send(this.fd, msg, msg.length, 0), `netlink send (${what})`);
    const answer: ParsedMessages = { done: false, interrupted: false };
    while (!answer.done) {
      const n = c.recv(this.fd, this.buffer, this.buffer.length, 0);
      if (n < 0) {
        const errno = lastErrno();
        if (errno === EINTR) continue;
        throw new NftablesReadError(`${what}: ${c.strerror(errno)}`, errno);
      }
      const parsed = parseMessages(this.buffer, n, onElement);
      if (parsed.errno !== undefined)
        throw new NftablesReadError(`${what}: ${c.strerror(parsed.errno)}`, parsed.errno);
      Object.assign(answer, parsed, { interrupted: answer.interrupted || parsed.interrupted });
    }
    // Elements may be missing or repeated: a reader taking running totals must not see that.
    if (answer.interrupted) throw new NftablesReadError(`${what}: the ruleset changed during the dump`);
    return answer;
  }

  /** The handle of `table`'s set `set` (family inet): a set deleted and added again gets a new one. */
  setHandle(table: string, set: string): number {
    const answer = this.exchange(`get set ${table} ${set}`, NFT_MSG_GETSET, 0, [
      netlinkAttribute(NFTA_SET_TABLE, cstring(table)),
      netlinkAttribute(NFTA_SET_NAME, cstring(set)),
    ]);
    if (answer.handle === undefined) throw new NftablesReadError(`get set ${table} ${set}: no handle`);
    return answer.handle;
  }

  /**
   * Every element of `table`'s set `set` (family inet) with its counter, to `visit`: the key is
   * only valid during the call (the receive buffer is reused).
   */
  visitSet(table: string, set: string, visit: ElementVisitor): void {
    this.exchange(
      `list set ${table} ${set}`,
      NFT_MSG_GETSETELEM,
      NLM_F_DUMP,
      [
        netlinkAttribute(NFTA_SET_ELEM_LIST_TABLE, cstring(table)),
        netlinkAttribute(NFTA_SET_ELEM_LIST_SET, cstring(set)),
      ],
      visit,
    );
  }

  /** Every element of the set, copied out. */
  setElements(table: string, set: string): CountedElement[] {
    const out: CountedElement[] = [];
    this.visitSet(table, set, (buf, off, len, packets, bytes) =>
      out.push({ key: Buffer.from(buf.subarray(off, off + len)), packets, bytes }),
    );
    return out;
  }

  /** The totals and handle of `table`'s named counter `name` (family inet). */
  counter(table: string, name: string): Counted & { handle: number } {
    const answer = this.exchange(`get counter ${table} ${name}`, NFT_MSG_GETOBJ, 0, [
      netlinkAttribute(NFTA_OBJ_TABLE, cstring(table)),
      netlinkAttribute(NFTA_OBJ_NAME, cstring(name)),
      netlinkAttribute(NFTA_OBJ_TYPE, be32(NFT_OBJECT_COUNTER)),
    ]);
    if (!answer.counter || answer.handle === undefined)
      throw new NftablesReadError(`get counter ${table} ${name}: no answer`);
    return { ...answer.counter, handle: answer.handle };
  }

  /**
   * Writes `changes` to `table`'s sets (family inet) as one nf_tables transaction (a batch from
   * BATCH_BEGIN to BATCH_END): the kernel commits every message or, when one fails, none. Every
   * message asks for an acknowledgement, so a refusal names its set.
   */
  commitElements(table: string, changes: readonly SetElementChange[]): void {
    this.commitBatch(elementMessages(table, changes), 'set elements');
  }

  /**
   * Sends `messages` as one nf_tables transaction: the kernel commits every message or, when one
   * fails, none. Every message asks for an acknowledgement, so a refusal names its object.
   */
  commitBatch(messages: readonly BatchMessage[], what: string): void {
    const c = libc();
    if (messages.length === 0) return;
    const batch = (type: number): Buffer => {
      const body = Buffer.from([0, 0, 0, 0]); // AF_UNSPEC, NFNETLINK_V0, res_id: the subsystem
      body.writeUInt16BE(NFNL_SUBSYS_NFTABLES, 2);
      return netlinkRequest(type, 0, ++this.seq, body);
    };
    const sent = new Map<number, string>();
    const parts = [batch(NFNL_MSG_BATCH_BEGIN)];
    for (const m of messages) {
      const seq = ++this.seq;
      sent.set(seq, m.object);
      parts.push(netlinkRequest(message(m.type), m.flags | NLM_F_ACK, seq, m.body));
    }
    parts.push(batch(NFNL_MSG_BATCH_END));
    const all = Buffer.concat(parts);
    this.receiveBufferFor(messages.length);
    check(c.send(this.fd, all, all.length, 0), `netlink send (${what})`);
    const errors: string[] = [];
    let firstErrno: number | undefined;
    while (sent.size > 0) {
      const n = c.recv(this.fd, this.buffer, this.buffer.length, 0);
      if (n < 0) {
        const errno = lastErrno();
        if (errno === EINTR) continue;
        throw new NftablesWriteError(
          `${what}: ${errno === ENOBUFS ? "nf_tables' answer was lost" : 'no answer from nf_tables'} (${c.strerror(errno)}), the transaction may be in force`,
          errno,
          false,
        );
      }
      for (const [seq, errno] of parseAcks(this.buffer, n)) {
        const object = sent.get(seq);
        if (object === undefined) continue;
        sent.delete(seq);
        if (errno !== 0) {
          firstErrno ??= errno;
          errors.push(`${object}: ${c.strerror(errno)}`);
        }
      }
    }
    if (errors.length > 0)
      throw new NftablesWriteError(`nf_tables refused the ${what} (${errors.join('; ')})`, firstErrno);
  }

  /** Room for one acknowledgement per message (SO_RCVBUFFORCE: above rmem_max; root in the node's netns). */
  private receiveBufferFor(messages: number): void {
    const size = Buffer.alloc(4);
    size.writeInt32LE(
      Math.min(0x7fffffff / 2, Math.max(RECEIVE_BUFFER, messages * RECEIVE_BUFFER_PER_MESSAGE)),
    );
    // Best effort: without it a large batch may still lose acks, which commitBatch reports.
    libc().setsockopt(this.fd, SOL_SOCKET, SO_RCVBUFFORCE, size, 4);
  }

  close(): void {
    libc().close(this.fd);
  }
}
