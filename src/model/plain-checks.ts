/**
 * Checks for the plain shape most documents of a hot kind have, made without zod: a cluster of
 * 50k pods spends most of its validation in zod building a copy of each one. A check here says
 * "zod accepts this document and gives back the same values" or says nothing; it never reports
 * an error. Anything outside the plain shape (a field not listed here, an odd type, a value that
 * fails a name or address rule) is left to the schema (schemas.ts), which then names the field
 * and says what is wrong. A differential test holds each check to its schema.
 */
import { parseAddress } from '../util/ip.js';
import {
  dns1123LabelError,
  dns1123SubdomainError,
  labelKeyError,
  labelValueError,
  portNameError,
} from './names.js';
import {
  SERVICE_NAME_LABEL,
  type RawEndpointSlice,
  type RawNetworkPolicy,
  type RawPod,
  type RawService,
} from './schemas.js';

type Plain = Record<string, unknown>;

function isPlain(v: unknown): v is Plain {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Own keys of `v`, each one of `allowed`. */
function onlyKeys(v: Plain, allowed: ReadonlySet<string>): boolean {
  for (const k in v) if (!allowed.has(k)) return false;
  return true;
}

function isLabels(v: unknown): boolean {
  if (!isPlain(v)) return false;
  for (const k in v) {
    const value = v[k];
    if (typeof value !== 'string' || labelKeyError(k) !== undefined || labelValueError(value) !== undefined)
      return false;
  }
  return true;
}

const PROTOCOLS = new Set(['TCP', 'UDP', 'SCTP']);

function isPortNumber(v: unknown): boolean {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 1 && v <= 65535;
}

function isPortName(v: unknown): boolean {
  return typeof v === 'string' && portNameError(v) === undefined;
}

/** Absent, or one of the protocols. */
function isOptionalProtocol(v: unknown): boolean {
  return v === undefined || (typeof v === 'string' && PROTOCOLS.has(v));
}

/** Absent, or a list whose every entry passes `check`. */
function isOptionalList(v: unknown, check: (entry: unknown) => boolean): boolean {
  return v === undefined || (Array.isArray(v) && v.every((entry) => check(entry)));
}

/** metadata with a name, a namespace and labels, nothing else (other ObjectMeta fields: the schema). */
const METADATA_KEYS = new Set(['name', 'namespace', 'labels']);

/** An object of exactly `keys` at most, of this apiVersion and kind, with plain namespaced metadata. */
function isTopLevel(v: unknown, keys: ReadonlySet<string>, apiVersion: string, kind: string): v is Plain {
  return (
    isPlain(v) &&
    onlyKeys(v, keys) &&
    v.apiVersion === apiVersion &&
    v.kind === kind &&
    isNamespacedMetadata(v.metadata)
  );
}

function isNamespacedMetadata(v: unknown): boolean {
  if (!isPlain(v) || !onlyKeys(v, METADATA_KEYS)) return false;
  if (typeof v.name !== 'string' || dns1123SubdomainError(v.name) !== undefined) return false;
  if (
    v.namespace !== undefined &&
    (typeof v.namespace !== 'string' || dns1123LabelError(v.namespace) !== undefined)
  )
    return false;
  return v.labels === undefined || isLabels(v.labels);
}

const POD_KEYS = new Set(['apiVersion', 'kind', 'metadata', 'spec', 'status']);

function isContainerPort(v: unknown): boolean {
  if (!isPlain(v) || !isPortNumber(v.containerPort)) return false;
  if (v.name !== undefined && !isPortName(v.name)) return false;
  return isOptionalProtocol(v.protocol);
}

function isContainer(v: unknown): boolean {
  if (!isPlain(v)) return false;
  if (v.name !== undefined && typeof v.name !== 'string') return false;
  return isOptionalList(v.ports, isContainerPort);
}

/** spec and status are loose in the schema: fields it does not name pass unchecked there too. */
function isPodSpec(v: unknown): boolean {
  if (!isPlain(v)) return false;
  if (
    v.nodeName !== undefined &&
    (typeof v.nodeName !== 'string' || dns1123SubdomainError(v.nodeName) !== undefined)
  )
    return false;
  return isOptionalList(v.containers, isContainer);
}

/** One stated address (podIPs, with its checks across entries, is the schema's). */
function isPodStatus(v: unknown): boolean {
  if (!isPlain(v) || v.podIPs !== undefined) return false;
  return v.podIP === undefined || (typeof v.podIP === 'string' && parseAddress(v.podIP) !== undefined);
}

/** A v1 Pod the schema accepts as it is (its parse would be a copy of it). */
export function isPlainPod(v: unknown): v is RawPod {
  return (
    isTopLevel(v, POD_KEYS, 'v1', 'Pod') &&
    (v.spec === undefined || isPodSpec(v.spec)) &&
    (v.status === undefined || isPodStatus(v.status))
  );
}

const SLICE_KEYS = new Set(['apiVersion', 'kind', 'metadata', 'addressType', 'ports', 'endpoints']);
const SLICE_PORT_KEYS = new Set(['name', 'port', 'protocol']);
const SLICE_ENDPOINT_KEYS = new Set(['addresses']);

function isSlicePort(v: unknown): boolean {
  return (
    isPlain(v) &&
    onlyKeys(v, SLICE_PORT_KEYS) &&
    isPortNumber(v.port) &&
    (v.name === undefined || typeof v.name === 'string') &&
    isOptionalProtocol(v.protocol)
  );
}

/** Addresses alone (conditions, targetRef, nodeName: the schema), each of the slice's family. */
function isSliceEndpoint(v: unknown, ipv6: boolean): boolean {
  if (!isPlain(v) || !onlyKeys(v, SLICE_ENDPOINT_KEYS)) return false;
  const addresses = v.addresses;
  if (!Array.isArray(addresses) || addresses.length === 0) return false;
  return addresses.every(
    (a) => typeof a === 'string' && a.includes(':') === ipv6 && parseAddress(a) !== undefined,
  );
}

/** A discovery.k8s.io/v1 EndpointSlice the schema accepts as it is. */
export function isPlainEndpointSlice(v: unknown): v is RawEndpointSlice {
  if (!isTopLevel(v, SLICE_KEYS, 'discovery.k8s.io/v1', 'EndpointSlice')) return false;
  const service = ((v.metadata as Plain).labels as Plain | undefined)?.[SERVICE_NAME_LABEL];
  if (typeof service !== 'string' || service === '') return false;
  if (v.addressType !== 'IPv4' && v.addressType !== 'IPv6') return false;
  if (!isOptionalList(v.ports, isSlicePort)) return false;
  const ipv6 = v.addressType === 'IPv6';
  return Array.isArray(v.endpoints) && v.endpoints.every((e) => isSliceEndpoint(e, ipv6));
}

const SERVICE_KEYS = new Set(['apiVersion', 'kind', 'metadata', 'spec']);
/**
 * A ClusterIP service's usual fields; node ports, load balancers, affinity, traffic policies and
 * families (each with checks across fields) are the schema's.
 */
const SERVICE_SPEC_KEYS = new Set(['type', 'clusterIP', 'selector', 'ports']);
const SERVICE_PORT_KEYS = new Set(['name', 'port', 'targetPort', 'protocol']);

function isServicePort(v: unknown): boolean {
  return (
    isPlain(v) &&
    onlyKeys(v, SERVICE_PORT_KEYS) &&
    isPortNumber(v.port) &&
    (v.name === undefined || isPortName(v.name)) &&
    (v.targetPort === undefined || isPortNumber(v.targetPort) || isPortName(v.targetPort)) &&
    isOptionalProtocol(v.protocol)
  );
}

function isServiceSpec(v: unknown): boolean {
  if (!isPlain(v) || !onlyKeys(v, SERVICE_SPEC_KEYS)) return false;
  if (v.type !== undefined && v.type !== 'ClusterIP') return false;
  if (
    v.clusterIP !== undefined &&
    v.clusterIP !== 'None' &&
    !(typeof v.clusterIP === 'string' && parseAddress(v.clusterIP) !== undefined)
  )
    return false;
  if (v.selector !== undefined && !isLabels(v.selector)) return false;
  return Array.isArray(v.ports) && v.ports.length > 0 && v.ports.every(isServicePort);
}

/** A v1 ClusterIP Service the schema accepts as it is. */
export function isPlainService(v: unknown): v is RawService {
  return isTopLevel(v, SERVICE_KEYS, 'v1', 'Service') && isServiceSpec(v.spec);
}

const SELECTOR_KEYS = new Set(['matchLabels', 'matchExpressions']);
const EXPRESSION_KEYS = new Set(['key', 'operator', 'values']);
const PEER_KEYS = new Set(['podSelector', 'namespaceSelector']);
const POLICY_PORT_KEYS = new Set(['protocol', 'port']);
const POLICY_KEYS = new Set(['apiVersion', 'kind', 'metadata', 'spec']);
const POLICY_SPEC_KEYS = new Set(['podSelector', 'policyTypes', 'ingress', 'egress']);
const POLICY_TYPES = new Set(['Ingress', 'Egress']);

function isExpression(v: unknown): boolean {
  if (!isPlain(v) || !onlyKeys(v, EXPRESSION_KEYS)) return false;
  if (typeof v.key !== 'string' || labelKeyError(v.key) !== undefined) return false;
  const values = v.values;
  if (!isOptionalList(values, (x) => typeof x === 'string' && labelValueError(x) === undefined)) return false;
  const n = (values as unknown[] | undefined)?.length ?? 0;
  if (v.operator === 'In' || v.operator === 'NotIn') return n > 0;
  return (v.operator === 'Exists' || v.operator === 'DoesNotExist') && n === 0;
}

function isSelector(v: unknown): boolean {
  if (!isPlain(v) || !onlyKeys(v, SELECTOR_KEYS)) return false;
  if (v.matchLabels !== undefined && !isLabels(v.matchLabels)) return false;
  return isOptionalList(v.matchExpressions, isExpression);
}

/** A peer by selectors (an ipBlock, with its checks of CIDRs, is the schema's). */
function isPeer(v: unknown): boolean {
  if (!isPlain(v) || !onlyKeys(v, PEER_KEYS)) return false;
  if (v.podSelector === undefined && v.namespaceSelector === undefined) return false;
  return (
    (v.podSelector === undefined || isSelector(v.podSelector)) &&
    (v.namespaceSelector === undefined || isSelector(v.namespaceSelector))
  );
}

/** A port or named port (endPort, with its check against port, is the schema's). */
function isPolicyPort(v: unknown): boolean {
  return (
    isPlain(v) &&
    onlyKeys(v, POLICY_PORT_KEYS) &&
    (v.port === undefined || isPortNumber(v.port) || isPortName(v.port)) &&
    isOptionalProtocol(v.protocol)
  );
}

function isPolicyRule(v: unknown, peerKey: 'from' | 'to'): boolean {
  if (!isPlain(v)) return false;
  for (const k in v) if (k !== peerKey && k !== 'ports') return false;
  return isOptionalList(v[peerKey], isPeer) && isOptionalList(v.ports, isPolicyPort);
}

function isRules(v: unknown, peerKey: 'from' | 'to'): boolean {
  return isOptionalList(v, (r) => isPolicyRule(r, peerKey));
}

/** A networking.k8s.io/v1 NetworkPolicy the schema accepts as it is. */
export function isPlainNetworkPolicy(v: unknown): v is RawNetworkPolicy {
  if (!isTopLevel(v, POLICY_KEYS, 'networking.k8s.io/v1', 'NetworkPolicy')) return false;
  const spec = v.spec;
  if (!isPlain(spec) || !onlyKeys(spec, POLICY_SPEC_KEYS)) return false;
  if (spec.podSelector !== undefined && !isSelector(spec.podSelector)) return false;
  const types = spec.policyTypes;
  if (
    types !== undefined &&
    !(
      Array.isArray(types) &&
      types.length <= 2 &&
      types.every((t) => typeof t === 'string' && POLICY_TYPES.has(t))
    )
  )
    return false;
  return isRules(spec.ingress, 'from') && isRules(spec.egress, 'to');
}

/** The kinds with a plain check, by their schema key (`apiVersion/kind`). */
export const PLAIN_CHECKS: Readonly<Record<string, (v: unknown) => boolean>> = {
  'v1/Pod': isPlainPod,
  'v1/Service': isPlainService,
  'discovery.k8s.io/v1/EndpointSlice': isPlainEndpointSlice,
  'networking.k8s.io/v1/NetworkPolicy': isPlainNetworkPolicy,
};
