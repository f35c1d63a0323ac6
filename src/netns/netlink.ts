/**
 * Building and reading netlink messages, shared by every netlink client (rtnetlink here, the
 * nf_tables counter reader in src/dataplane/nftables). Netlink headers and attributes are in host byte order: little-endian hosts only
 * (x86_64, arm64), like the rest of the project's native code.
 */

export const AF_NETLINK = 16;
export const SOCK_RAW = 3;

/** sizeof(struct nlmsghdr). */
export const NLMSG_HDRLEN = 16;
export const NLMSG_ERROR = 2;
export const NLM_F_REQUEST = 0x1;
export const NLM_F_ACK = 0x4;

const align4 = (n: number): number => (n + 3) & ~3;

/** One netlink attribute: struct nlattr, then `data`, padded to 4 bytes. */
export function netlinkAttribute(type: number, data: Buffer): Buffer {
  const len = 4 + data.length;
  const out = Buffer.alloc(align4(len));
  out.writeUInt16LE(len, 0);
  out.writeUInt16LE(type, 2);
  data.copy(out, 4);
  return out;
}

/** A request: struct nlmsghdr (`flags` beside NLM_F_REQUEST, pid 0: the kernel), then `body`. */
export function netlinkRequest(type: number, flags: number, seq: number, body: Buffer): Buffer {
  const msg = Buffer.alloc(NLMSG_HDRLEN + body.length);
  msg.writeUInt32LE(msg.length, 0);
  msg.writeUInt16LE(type, 4);
  msg.writeUInt16LE(NLM_F_REQUEST | flags, 6);
  msg.writeUInt32LE(seq, 8);
  body.copy(msg, NLMSG_HDRLEN);
  return msg;
}

/**
 * The kernel's answer to request `seq` among the first `length` bytes of `reply`: 0 for an
 * acknowledgement, the errno of a refusal, or undefined when the answer is not in there.
 */
export function ackErrno(reply: Buffer, length: number, seq: number): number | undefined {
  for (let off = 0; off + NLMSG_HDRLEN <= length;) {
    const len = reply.readUInt32LE(off);
    const type = reply.readUInt16LE(off + 4);
    if (type === NLMSG_ERROR && reply.readUInt32LE(off + 8) === seq) {
      const error = reply.readInt32LE(off + 16); // -errno, 0 for an acknowledgement
      return error === 0 ? 0 : -error;
    }
    if (len < NLMSG_HDRLEN) break;
    off += align4(len);
  }
  return undefined;
}

/** A field of a fixed-layout kernel struct, in host byte order. */
export type StructField = readonly [offset: number, kind: 'u8' | 'u16' | 'u32' | 'i32', value: number];

/** A kernel struct of `size` bytes: zero but for `fields`. */
export function packStruct(size: number, fields: readonly StructField[]): Buffer {
  const b = Buffer.alloc(size);
  for (const [offset, kind, value] of fields) {
    if (kind === 'u8') b.writeUInt8(value, offset);
    else if (kind === 'u16') b.writeUInt16LE(value, offset);
    else if (kind === 'u32') b.writeUInt32LE(value, offset);
    else b.writeInt32LE(value, offset);
  }
  return b;
}
