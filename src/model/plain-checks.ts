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
import { SERVICE_NAME_LABEL, type RawEndpointSlice, type RawPod, type RawService } from './schemas.js';

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

/** metadata with a name, a namespace and labels, nothing else (other ObjectMeta fields: the schema). */
const METADATA_KEYS = new Set(['name', 'namespace', 'labels']);

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
  if (v.name !== undefined && (typeof v.name !== 'string' || portNameError(v.name) !== undefined))
    return false;
  return v.protocol === undefined || (typeof v.protocol === 'string' && PROTOCOLS.has(v.protocol));
}

function isContainer(v: unknown): boolean {
  if (!isPlain(v)) return false;
  if (v.name !== undefined && typeof v.name !== 'string') return false;
  return v.ports === undefined || (Array.isArray(v.ports) && v.ports.every(isContainerPort));
}

/** spec and status are loose in the schema: fields it does not name pass unchecked there too. */
function isPodSpec(v: unknown): boolean {
  if (!isPlain(v)) return false;
  if (
    v.nodeName !== undefined &&
    (typeof v.nodeName !== 'string' || dns1123SubdomainError(v.nodeName) !== undefined)
  )
    return false;
  return v.containers === undefined || (Array.isArray(v.containers) && v.containers.every(isContainer));
}

/** One stated address (podIPs, with its checks across entries, is the schema's). */
function isPodStatus(v: unknown): boolean {
  if (!isPlain(v) || v.podIPs !== undefined) return false;
  return v.podIP === undefined || (typeof v.podIP === 'string' && parseAddress(v.podIP) !== undefined);
}

/** A v1 Pod the schema accepts as it is (its parse would be a copy of it). */
export function isPlainPod(v: unknown): v is RawPod {
  return (
    isPlain(v) &&
    onlyKeys(v, POD_KEYS) &&
    v.apiVersion === 'v1' &&
    v.kind === 'Pod' &&
    isNamespacedMetadata(v.metadata) &&
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
    (v.protocol === undefined || (typeof v.protocol === 'string' && PROTOCOLS.has(v.protocol)))
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
  if (!isPlain(v) || !onlyKeys(v, SLICE_KEYS)) return false;
  if (v.apiVersion !== 'discovery.k8s.io/v1' || v.kind !== 'EndpointSlice') return false;
  if (!isNamespacedMetadata(v.metadata)) return false;
  const service = ((v.metadata as Plain).labels as Plain | undefined)?.[SERVICE_NAME_LABEL];
  if (typeof service !== 'string' || service === '') return false;
  if (v.addressType !== 'IPv4' && v.addressType !== 'IPv6') return false;
  if (v.ports !== undefined && !(Array.isArray(v.ports) && v.ports.every(isSlicePort))) return false;
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

function isPortName(v: unknown): boolean {
  return typeof v === 'string' && portNameError(v) === undefined;
}

function isServicePort(v: unknown): boolean {
  return (
    isPlain(v) &&
    onlyKeys(v, SERVICE_PORT_KEYS) &&
    isPortNumber(v.port) &&
    (v.name === undefined || isPortName(v.name)) &&
    (v.targetPort === undefined || isPortNumber(v.targetPort) || isPortName(v.targetPort)) &&
    (v.protocol === undefined || (typeof v.protocol === 'string' && PROTOCOLS.has(v.protocol)))
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
  return (
    isPlain(v) &&
    onlyKeys(v, SERVICE_KEYS) &&
    v.apiVersion === 'v1' &&
    v.kind === 'Service' &&
    isNamespacedMetadata(v.metadata) &&
    isServiceSpec(v.spec)
  );
}

/** The kinds with a plain check, by their schema key (`apiVersion/kind`). */
export const PLAIN_CHECKS: Readonly<Record<string, (v: unknown) => boolean>> = {
  'v1/Pod': isPlainPod,
  'v1/Service': isPlainService,
  'discovery.k8s.io/v1/EndpointSlice': isPlainEndpointSlice,
};
