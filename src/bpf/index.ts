/**
 * A TypeScript eBPF toolkit on the raw bpf(2) syscall: build programs with the assembler, load
 * them, attach them with links, talk to maps through codecs, read ring buffers, pin objects.
 * It knows nothing about policy.
 */
export * from './asm/index.js';
export * as codecs from './codecs.js';
export type { Codec, CodecValue, StructCodec } from './codecs.js';
export {
  ATTACH_TYPES,
  AttachFlags,
  LINK_TYPES,
  MAP_TYPES,
  MapFlags,
  PROGRAM_TYPES,
  ProgramFlags,
  TcAction,
  UpdateFlags,
  XdpAction,
  XdpFlags,
  type AttachType,
  type MapType,
  type ProgramType,
  type UpdateMode,
} from './constants.js';
export {
  BpfBusyError,
  BpfCapacityError,
  BpfError,
  BpfExistsError,
  BpfInvalidArgumentError,
  BpfNotFoundError,
  BpfPermissionError,
  BpfUnsupportedError,
  errnoName,
  MissingKernelFeatureError,
  UnsupportedFeatureError,
  VerifierError,
} from './errors.js';
export { parseCpuList, possibleCpuCount } from './cpus.js';
export { mapMemlock, openMapId, openMapPin, walkMapRaw, type OpenedMap } from './map-walk.js';
export {
  BpfMap,
  MapBase,
  MapOfMaps,
  MapShapeError,
  PerCpuMap,
  readMapInfo,
  RingBufMap,
  sumValues,
  type MapInfo,
  type MapOfMapsSpec,
  type MapSpec,
  type PerCpuMapSpec,
  type PerCpuMapType,
  type PlainMapType,
} from './maps.js';
export {
  instructionSlots,
  Program,
  readProgramInfo,
  type ProgramInfo,
  type ProgramSpec,
  type TestRunOptions,
  type TestRunResult,
} from './programs.js';
export {
  attachCgroup,
  attachKprobe,
  attachRawTracepoint,
  attachTcx,
  attachTracepoint,
  attachTracing,
  attachXdp,
  ensureTracefs,
  Link,
  queryTcx,
  readLinkInfo,
  resolveIfindex,
  tracepointId,
  type CgroupAttachType,
  type InterfaceTarget,
  type LinkInfo,
  type TcxTarget,
  type TracingAttachType,
  type XdpMode,
} from './links.js';
export {
  BPFFS_ROOT,
  ensureBpffs,
  isBpffsMounted,
  isPinned,
  listPins,
  openPinnedFd,
  PIN_ROOT,
  pinFd,
  pinPath,
  pinScopeDir,
  removePinScope,
  unpin,
  type PinKind,
} from './pins.js';
export { RingBufReader, type RecordHandler } from './ringbuf.js';
export { netnsPath } from '../netns/namespaces.js';
export { openNetns, withNetns } from '../netns/setns.js';
export {
  ALL_FEATURES,
  explainFailure,
  needing,
  probeFeature,
  probeFeatures,
  requireFeatures,
  type FeatureName,
  type FeatureStatus,
} from './features.js';
export { parseVerifierLog, type VerifierFinding } from './verifier.js';
export { BpfObject } from './object.js';
export { closeFd, triggerGetppid } from './sys.js';
export {
  formatResolved,
  Kallsyms,
  kernelSymbols,
  parseKallsyms,
  type KernelSymbol,
  type ResolvedAddress,
} from './kallsyms.js';
export * as btf from './btf/index.js';
export { kernelBtf, memberOffset, typeByName, type Btf } from './btf/index.js';
export type { ProgQueryResult } from './commands.js';
