/**
 * The set headers of one node as this backend last saw them (fingerprint.ts), kept up to date by
 * its own applies: after an apply only the sets it touched are read again, instead of every set
 * (`ipset list -t` at 10k endpoints lists thousands of sets: 60–330 ms, which the agent spends
 * right after each change, and a change that comes next waits behind). A set nobody touched
 * keeps the header of the last full read, so a change made behind our back to an untouched set
 * still shows: the next full read differs from this one.
 */
import { hasCheckedHeader, headersDigest, readSetHeaders } from './fingerprint.js';

export class SetHeaders {
  /** From the last full read, with our applies since; undefined until a full read. */
  private headers: Map<string, string> | undefined;
  /** Sets our applies touched since the headers were read. */
  private readonly touched = new Set<string>();
  /** Moves with every touch or forget: a full read that an apply overlapped is no base. */
  private epoch = 0;

  constructor(private readonly netns: string) {}

  /** Every set's header (the unwatched poll): the new base. */
  async readAll(): Promise<string> {
    const at = this.epoch;
    const headers = await readSetHeaders(this.netns);
    // The agent may read while it applies (its poll runs outside its queue): sets touched
    // meanwhile may have been listed before or after the change, so this reading stays a reading.
    if (this.epoch === at) {
      this.touched.clear();
      this.headers = headers;
    }
    return headersDigest(headers);
  }

  /** Our apply created, changed or destroyed these sets. */
  touch(names: Iterable<string>): void {
    this.epoch++;
    for (const n of names) if (hasCheckedHeader(n)) this.touched.add(n);
  }

  /** The kernel may hold anything of ours (no shadow, a failed apply, a removal): read all next time. */
  forget(): void {
    this.epoch++;
    this.headers = undefined;
    this.touched.clear();
  }

  /**
   * The headers after our applies: the touched sets read again (those that `exist` after them;
   * the others are gone), the rest as last read. Everything is read when there is no base yet or
   * a touched set cannot be read.
   */
  async readAfterApply(exist: ReadonlySet<string>): Promise<string> {
    const headers = this.headers;
    if (!headers) return this.readAll();
    const present = [...this.touched].filter((n) => exist.has(n));
    let fresh: Map<string, string>;
    try {
      fresh = present.length ? await readSetHeaders(this.netns, present) : new Map<string, string>();
    } catch {
      return this.readAll();
    }
    for (const n of this.touched) headers.delete(n);
    for (const [n, h] of fresh) headers.set(n, h);
    this.touched.clear();
    return headersDigest(headers);
  }
}
