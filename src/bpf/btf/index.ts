/**
 * BTF (BPF Type Format) for the toolkit: read the running kernel's types (lazily, cached), find
 * structs, members, enums and functions by name, and compute field offsets for CO-RE. Program
 * BTF (what we load with our own programs) is built by ./builder.ts.
 */
import { readFileSync } from 'node:fs';
import { Btf, BtfError } from './parse.js';
import { releasedWhenQuiet } from '../../util/quiet-caches.js';

export { Btf, BtfError } from './parse.js';
export { BtfBuilder, type BuilderMember } from './builder.js';
export {
  compositeByName,
  enumValues,
  memberOffset,
  resolveType,
  sizeOf,
  typeByName,
  type FieldLocation,
} from './query.js';
export { resolveCoreRelocations } from './core.js';
export {
  BTF_KINDS,
  type BtfEnumValue,
  type BtfKind,
  type BtfMember,
  type BtfParam,
  type BtfType,
  type BtfTypeOf,
  type NamedKind,
} from './types.js';

export const VMLINUX_BTF_PATH = '/sys/kernel/btf/vmlinux';
const MODULE_BTF_DIR = '/sys/kernel/btf';

let vmlinux: Btf | undefined;
/** How long the last kernelBtf() parse took (ms); reported by `bench observe`. */
let vmlinuxParseMs: number | undefined;
const modules = new Map<string, Btf>();

/** The running kernel's BTF, read and indexed on first use, then cached for the process. */
export function kernelBtf(): Btf {
  if (!vmlinux) {
    const started = performance.now();
    let blob: Buffer;
    try {
      blob = readFileSync(VMLINUX_BTF_PATH);
    } catch (err) {
      throw new BtfError(
        `cannot read kernel BTF at ${VMLINUX_BTF_PATH} (${(err as Error).message}): the kernel needs CONFIG_DEBUG_INFO_BTF=y`,
      );
    }
    vmlinux = new Btf(blob);
    vmlinuxParseMs = performance.now() - started;
  }
  return vmlinux;
}

/**
 * Forgets the cached kernel and module BTF (the next kernelBtf() reads it again). A long-running
 * process that loaded its tracing programs at start has no further use for the ~6 MiB it holds:
 * dropped when the process goes quiet (the agent's compaction, agent/memory.ts).
 */
function releaseKernelBtf(): void {
  vmlinux = undefined;
  modules.clear();
}
releasedWhenQuiet(releaseKernelBtf);

/** Milliseconds the kernel BTF parse took in this process, or undefined before the first use. */
export function kernelBtfParseMs(): number | undefined {
  return vmlinuxParseMs;
}

/** A kernel module's BTF (/sys/kernel/btf/<module>), split on top of vmlinux. */
export function moduleBtf(module: string): Btf {
  let btf = modules.get(module);
  if (!btf) {
    if (!/^[\w-]+$/.test(module)) throw new BtfError(`bad kernel module name '${module}'`);
    btf = new Btf(readFileSync(`${MODULE_BTF_DIR}/${module}`), kernelBtf());
    modules.set(module, btf);
  }
  return btf;
}

/** Parses a BTF blob; module/split BTF takes the BTF it extends as `base`. */
export function parseBtf(blob: Uint8Array, base?: Btf): Btf {
  return new Btf(blob, base);
}
export { loadBtf } from './load.js';
export { functionStarts, programBtf, type ProgramBtf } from './program-btf.js';
