/** Netlink attribute values as nf_tables reads them (names NUL-terminated, numbers big-endian). */
import { netlinkAttribute } from '../../netns/netlink.js';

const NLA_F_NESTED = 0x8000;

export const nested = (type: number, attrs: readonly Buffer[]): Buffer =>
  netlinkAttribute(type | NLA_F_NESTED, Buffer.concat(attrs));

export function cstring(s: string): Buffer {
  return Buffer.from(`${s}\0`, 'latin1');
}

export function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0);
  return b;
}
