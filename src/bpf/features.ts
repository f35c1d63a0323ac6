import { existsSync } from 'node:fs';
import { release } from 'node:os';
import { Assembler } from './asm/builder.js';
import { R0, R1, R2 } from './asm/instruction.js';
import { linkCreate, mapCreate } from './commands.js';
import { ATTACH_TYPES, MAP_TYPES, MapFlags } from './constants.js';
import { BpfError, MissingKernelFeatureError, UnsupportedFeatureError, VerifierError } from './errors.js';
import { Program } from './programs.js';
import { closeFd, pageSize } from './sys.js';

/**
 * Asks the running kernel, not its version number, whether a feature works: each probe creates
 * the smallest object that needs it (a map, a program, a link on no interface) and reads the
 * errno. Results are cached per process.
 */

export type FeatureName = 'btf' | 'lpm_trie' | 'ringbuf' | 'redirect_peer' | 'tcx';

export interface FeatureStatus {
  available: boolean;
  /** What the probe saw. */
  detail: string;
  /** The upstream release that introduced the feature. */
  since: string;
}

const SINCE: Record<FeatureName, string> = {
  btf: '5.4 with CONFIG_DEBUG_INFO_BTF',
  lpm_trie: '4.11',
  ringbuf: '5.8',
  redirect_peer: '5.10',
  tcx: '6.6',
};

function errorText(err: unknown): string {
  return err instanceof Error ? (err.message.split('\n')[0] ?? err.message) : String(err);
}

function probeMap(
  mapType: number,
  keySize: number,
  valueSize: number,
  maxEntries: number,
  flags: number,
): FeatureStatus['detail'] | true {
  try {
    closeFd(mapCreate({ mapType, keySize, valueSize, maxEntries, flags }));
    return true;
  } catch (err) {
    return errorText(err);
  }
}

const PROBES: Record<FeatureName, () => { available: boolean; detail: string }> = {
  btf: () =>
    existsSync('/sys/kernel/btf/vmlinux')
      ? { available: true, detail: '/sys/kernel/btf/vmlinux present' }
      : {
          available: false,
          detail: '/sys/kernel/btf/vmlinux missing (kernel built without CONFIG_DEBUG_INFO_BTF)',
        },

  lpm_trie: () => {
    const result = probeMap(MAP_TYPES.lpm_trie, 8, 4, 1, MapFlags.NO_PREALLOC);
    return result === true
      ? { available: true, detail: 'created an LPM trie map' }
      : { available: false, detail: result };
  },

  ringbuf: () => {
    const result = probeMap(MAP_TYPES.ringbuf, 0, 0, pageSize(), 0);
    return result === true
      ? { available: true, detail: 'created a ring buffer map' }
      : { available: false, detail: result };
  },

  redirect_peer: () => {
    const code = new Assembler()
      .mov64(R1, 0)
      .mov64(R2, 0)
      .call('redirect_peer')
      .mov64(R0, 0)
      .exit()
      .assemble();
    try {
      Program.load({ name: 'probe_peer', type: 'sched_cls', instructions: code }).close();
      return { available: true, detail: 'a sched_cls program calling bpf_redirect_peer loaded' };
    } catch (err) {
      if (err instanceof VerifierError) return { available: false, detail: `verifier: ${err.reason}` };
      return { available: false, detail: errorText(err) };
    }
  },

  tcx: () => {
    const program = Program.load({
      name: 'probe_tcx',
      type: 'sched_cls',
      instructions: new Assembler().exitWith(0).assemble(),
    });
    try {
      // ifindex 0 never exists: a kernel with tcx looks the device up (ENODEV), one without
      // rejects the attach type (EINVAL). Nothing gets attached either way.
      const fd = linkCreate({
        progFd: program.fd,
        target: 0,
        attachType: ATTACH_TYPES.tcx_ingress,
        flags: 0,
      });
      closeFd(fd);
      return { available: true, detail: 'tcx link created' };
    } catch (err) {
      if (err instanceof BpfError && (err.code === 'ENODEV' || err.code === 'ENXIO'))
        return { available: true, detail: `BPF_TCX_INGRESS accepted (${err.code} for the absent device)` };
      return { available: false, detail: errorText(err) };
    } finally {
      program.close();
    }
  },
};

const cache = new Map<FeatureName, FeatureStatus>();
/** Probes under way: a probe's own failure must not be explained by probing again. */
const probing = new Set<FeatureName>();

export function probeFeature(name: FeatureName): FeatureStatus {
  let status = cache.get(name);
  if (!status) {
    probing.add(name);
    try {
      status = { ...PROBES[name](), since: SINCE[name] };
    } finally {
      probing.delete(name);
    }
    cache.set(name, status);
  }
  return status;
}

/** Errnos the kernel answers with when it does not know a type, flag or attach point. */
const MISSING_FEATURE_CODES = new Set(['EINVAL', 'EOPNOTSUPP', 'ENOTSUPP', 'E2BIG']);

/** Helpers whose absence from the kernel is one of the features probed here. */
const HELPER_FEATURES: Readonly<Record<string, FeatureName>> = {
  bpf_redirect_peer: 'redirect_peer',
  bpf_ringbuf_output: 'ringbuf',
  bpf_ringbuf_reserve: 'ringbuf',
};

/** The feature a verifier rejection shows missing: a helper it does not know. */
function featureOfRejection(err: VerifierError): FeatureName | undefined {
  const helper = /unknown func (bpf_\w+)#/.exec(err.reason)?.[1];
  return helper ? HELPER_FEATURES[helper] : undefined;
}

/**
 * What a failed load, attach or map creation means when the running kernel lacks `feature` (for a
 * verifier rejection: the feature of the helper it did not know): a MissingKernelFeatureError
 * saying so, with the kernel's error as its cause. Any other error comes back as it was. Probes
 * only for the errors a missing feature produces.
 */
export function explainFailure(err: unknown, feature?: FeatureName): unknown {
  const missing =
    err instanceof VerifierError
      ? featureOfRejection(err)
      : err instanceof BpfError && MISSING_FEATURE_CODES.has(err.code)
        ? feature
        : undefined;
  if (!missing || probing.has(missing)) return err;
  const status = probeFeature(missing);
  return status.available ? err : new MissingKernelFeatureError(missing, release(), status.since, err);
}

/** Runs `action`; if it fails because the kernel lacks `feature`, throws the error that says so. */
export function needing<T>(feature: FeatureName, action: () => T): T {
  try {
    return action();
  } catch (err) {
    throw explainFailure(err, feature);
  }
}

export const ALL_FEATURES: readonly FeatureName[] = ['btf', 'lpm_trie', 'ringbuf', 'redirect_peer', 'tcx'];

export function probeFeatures(
  names: readonly FeatureName[] = ALL_FEATURES,
): Record<FeatureName, FeatureStatus> {
  return Object.fromEntries(names.map((name) => [name, probeFeature(name)])) as Record<
    FeatureName,
    FeatureStatus
  >;
}

/** Throws UnsupportedFeatureError naming every missing feature and the kernel that has it. */
export function requireFeatures(...names: FeatureName[]): void {
  const missing = names
    .map((name) => [name, probeFeature(name)] as const)
    .filter(([, status]) => !status.available);
  if (missing.length === 0) return;
  const detail = missing
    .map(([name, status]) => `${name} (needs Linux ${status.since}; probe: ${status.detail})`)
    .join('; ');
  throw new UnsupportedFeatureError(
    missing.map(([name]) => name).join(', '),
    `running kernel ${release()} lacks ${detail}`,
  );
}
