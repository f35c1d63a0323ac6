import { describe, expect, it } from 'vitest';
import {
  ackErrno,
  NLM_F_ACK,
  NLMSG_ERROR,
  netlinkAttribute,
  netlinkRequest,
  packStruct,
} from '../../src/netns/netlink.js';

function ack(seq: number, errno: number): Buffer {
  const b = Buffer.alloc(36);
  b.writeUInt32LE(36, 0);
  b.writeUInt16LE(NLMSG_ERROR, 4);
  b.writeUInt32LE(seq, 8);
  b.writeInt32LE(-errno, 16);
  return b;
}

describe('netlink messages', () => {
  it('pads an attribute to 4 bytes but records its real length', () => {
    const a = netlinkAttribute(7, Buffer.from([1, 2, 3, 4, 5]));
    expect(a.length).toBe(12);
    expect(a.readUInt16LE(0)).toBe(9);
    expect(a.readUInt16LE(2)).toBe(7);
    expect([...a.subarray(4)]).toEqual([1, 2, 3, 4, 5, 0, 0, 0]);
  });

  it('builds a request header around the body', () => {
    const m = netlinkRequest(16, NLM_F_ACK, 42, Buffer.from([9, 9, 9, 9]));
    expect(m.length).toBe(20);
    expect(m.readUInt32LE(0)).toBe(20);
    expect(m.readUInt16LE(4)).toBe(16);
    expect(m.readUInt16LE(6)).toBe(0x1 | NLM_F_ACK);
    expect(m.readUInt32LE(8)).toBe(42);
    expect([...m.subarray(16)]).toEqual([9, 9, 9, 9]);
  });

  it('finds the answer to its own request only', () => {
    const reply = Buffer.concat([ack(1, 17), ack(2, 0)]);
    expect(ackErrno(reply, reply.length, 1)).toBe(17);
    expect(ackErrno(reply, reply.length, 2)).toBe(0);
    expect(ackErrno(reply, reply.length, 3)).toBeUndefined();
    expect(ackErrno(reply, 36, 2)).toBeUndefined();
  });

  it('packs struct fields little-endian at their offsets', () => {
    const s = packStruct(12, [
      [0, 'u8', 2],
      [4, 'i32', -1],
      [8, 'u16', 0x80],
    ]);
    expect([...s]).toEqual([2, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x80, 0, 0, 0]);
  });
});
