/**
 * Kernel code addresses → function names, from /proc/kallsyms: what a tracepoint's `location`
 * or a stack address means ("ip_rcv_finish_core+0x1a2"). Read once, on the first lookup, and
 * searched by binary search; each resolved address is cached. Addresses are all zero without
 * CAP_SYSLOG (kptr_restrict): then nothing resolves and callers show the raw address.
 */
import { readFileSync } from 'node:fs';

export interface KernelSymbol {
  address: bigint;
  name: string;
  /** Loadable module the symbol is in (`[nf_conntrack]` in kallsyms); absent for vmlinux. */
  module?: string;
}

export interface ResolvedAddress {
  name: string;
  offset: number;
  module?: string;
}

/** Text symbols (types t, T, w, W) in address order, from the text of /proc/kallsyms. */
export function parseKallsyms(text: string): KernelSymbol[] {
  const symbols: KernelSymbol[] = [];
  for (const line of text.split('\n')) {
    // "ffffffff81000000 T _stext" or "ffffffffc0a01000 t nf_ct_get_id\t[nf_conntrack]"
    const m = /^([0-9a-f]+) ([tTwW]) (\S+)(?:\s+\[(\S+)\])?/.exec(line);
    if (!m?.[1] || !m[3]) continue;
    const address = BigInt(`0x${m[1]}`);
    if (address === 0n) continue;
    symbols.push({ address, name: m[3], ...(m[4] ? { module: m[4] } : {}) });
  }
  return symbols.sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0));
}

/** `name+0xoff` (and ` [module]`), as the kernel prints %pS. */
export function formatResolved(r: ResolvedAddress): string {
  return `${r.name}+0x${r.offset.toString(16)}${r.module ? ` [${r.module}]` : ''}`;
}

/** Functions further than this from the nearest symbol below are not believed to contain the address. */
const MAX_FUNCTION_BYTES = 1 << 20;

export class Kallsyms {
  private readonly cache = new Map<bigint, ResolvedAddress | null>();

  constructor(private readonly symbols: readonly KernelSymbol[]) {}

  static parse(text: string): Kallsyms {
    return new Kallsyms(parseKallsyms(text));
  }

  get size(): number {
    return this.symbols.length;
  }

  /** The function containing `address` (the nearest symbol at or below it), or undefined. */
  resolve(address: bigint): ResolvedAddress | undefined {
    const cached = this.cache.get(address);
    if (cached !== undefined) return cached ?? undefined;
    const found = this.search(address);
    if (this.cache.size > 65_536) this.cache.clear();
    this.cache.set(address, found ?? null);
    return found;
  }

  private search(address: bigint): ResolvedAddress | undefined {
    let lo = 0;
    let hi = this.symbols.length - 1;
    let best = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const s = this.symbols[mid];
      if (!s) break;
      if (s.address <= address) {
        best = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    const s = this.symbols[best];
    if (!s) return undefined;
    const offset = Number(address - s.address);
    if (offset > MAX_FUNCTION_BYTES) return undefined;
    return { name: s.name, offset, ...(s.module ? { module: s.module } : {}) };
  }
}

let kernel: Kallsyms | undefined;

/** The running kernel's symbols, read from /proc/kallsyms on first use and kept. */
export function kernelSymbols(): Kallsyms {
  kernel ??= Kallsyms.parse(readFileSync('/proc/kallsyms', 'utf8'));
  return kernel;
}
