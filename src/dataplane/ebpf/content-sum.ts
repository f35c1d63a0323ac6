/**
 * An order-independent digest of a map's contents: the lane-wise sum (mod 2^32, four lanes) of a
 * 128-bit hash of each element's key and value bytes. A full walk of the kernel map and a shadow
 * of what was written produce the same digest whatever order the kernel walks in, and a shadow
 * keeps it up to date by adding what it writes and subtracting what it deletes, without reading
 * anything back. It tells drift apart, it is not a cryptographic commitment (nobody forges map
 * contents to fool the drift check; whoever could would simply detach the programs).
 */
import type { Codec } from '../../bpf/index.js';

const LANES = 4;
const SEEDS = [0x9747b28c, 0x2545f491, 0x6c078965, 0x1b873593] as const;

function rotl(x: number, r: number): number {
  return (x << r) | (x >>> (32 - r));
}

function fmix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

function mixWord(h: number, k: number): number {
  k = Math.imul(k, 0xcc9e2d51);
  k = rotl(k, 15);
  k = Math.imul(k, 0x1b873593);
  h ^= k;
  h = rotl(h, 13);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

/** murmur3 (x86, 32-bit) of key ‖ value with one seed per lane; key and value sizes are fixed per map. */
function elementHash(key: Uint8Array, value: Uint8Array, out: Uint32Array): void {
  for (let lane = 0; lane < LANES; lane++) {
    let h = SEEDS[lane] as number;
    let word = 0;
    let filled = 0;
    for (const bytes of [key, value]) {
      for (let i = 0; i < bytes.length; i++) {
        word |= (bytes[i] as number) << (8 * filled);
        if (++filled === 4) {
          h = mixWord(h, word);
          word = 0;
          filled = 0;
        }
      }
    }
    if (filled > 0) h = mixWord(h, word);
    out[lane] = fmix(h ^ (key.length + value.length));
  }
}

export class ContentSum {
  private readonly lanes = new Uint32Array(LANES);
  private readonly scratch = new Uint32Array(LANES);

  /** Adds (sign 1) or subtracts (sign -1) one element. */
  private fold(key: Uint8Array, value: Uint8Array, sign: 1 | -1): void {
    elementHash(key, value, this.scratch);
    for (let i = 0; i < LANES; i++)
      this.lanes[i] = ((this.lanes[i] as number) + sign * (this.scratch[i] as number)) >>> 0;
  }

  add(key: Uint8Array, value: Uint8Array): void {
    this.fold(key, value, 1);
  }

  remove(key: Uint8Array, value: Uint8Array): void {
    this.fold(key, value, -1);
  }

  copy(): ContentSum {
    const c = new ContentSum();
    c.lanes.set(this.lanes);
    return c;
  }

  /** 16 bytes. */
  bytes(): Buffer {
    const out = Buffer.alloc(LANES * 4);
    this.lanes.forEach((v, i) => out.writeUInt32LE(v, i * 4));
    return out;
  }

  hex(): string {
    return this.bytes().toString('hex');
  }
}

/** Adds and removes typed elements, encoded as the kernel holds them (the map's own codecs). */
export class TypedContentSum<K, V> {
  private readonly keyBytes: Buffer;
  private readonly valueBytes: Buffer;

  constructor(
    private readonly keyCodec: Codec<K>,
    private readonly valueCodec: Codec<V>,
    readonly sum: ContentSum = new ContentSum(),
  ) {
    this.keyBytes = Buffer.alloc(keyCodec.size);
    this.valueBytes = Buffer.alloc(valueCodec.size);
  }

  private encode(key: K, value: V): void {
    this.keyBytes.fill(0);
    this.valueBytes.fill(0);
    this.keyCodec.encode(key, this.keyBytes, 0);
    this.valueCodec.encode(value, this.valueBytes, 0);
  }

  add(key: K, value: V): void {
    this.encode(key, value);
    this.sum.add(this.keyBytes, this.valueBytes);
  }

  remove(key: K, value: V): void {
    this.encode(key, value);
    this.sum.remove(this.keyBytes, this.valueBytes);
  }
}
