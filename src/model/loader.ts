/**
 * Manifests → validated Model. Every problem is collected (not just the first) and reported as
 * file:line: Kind namespace/name: field: message; when there is any, no model is returned.
 */
import { dirname, resolve } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import type { z } from 'zod';
import { formatCidr, formatIpv4, parseCidr, parseIpv4CidrRange } from '../util/ip.js';
import {
  implicitDefaultNamespace,
  toEndpointSlice,
  toGlobalPolicy,
  toNamespace,
  toNetworkPolicy,
  toPod,
  toService,
  DEFAULT_NAMESPACE,
} from './convert.js';
import {
  expandManifestPaths,
  InputLimitError,
  readBoundedFile,
  readManifestDocuments,
  type ManifestDocument,
} from './documents.js';
import { excerpt, formatPath, ManifestError, type ManifestIssue } from './errors.js';
import type { ValueProblem } from './limits.js';
import { PLAIN_CHECKS } from './plain-checks.js';
import { kindSchemas, type KindKey, type RawPrefilter } from './schemas.js';
import { internStrings, NameTable, type LeafTable } from '../util/intern.js';
import {
  emptyModel,
  type EndpointSlice,
  type Model,
  type Pod,
  type Service,
  type SourceRef,
} from './types.js';

const NAMESPACED_KINDS = new Set(['Pod', 'Service', 'NetworkPolicy', 'EndpointSlice']);

export interface ManifestText {
  file: string;
  text: string;
}

/** Where a model object was written: its file, kind and name, and the line of any of its fields. */
interface Located {
  file: string;
  lineOf: ManifestDocument['lineOf'];
  kind: string;
  object: string;
}

/** How errors name an object of `kind`: `namespace/name` for namespaced kinds, else `name`. */
function qualifiedName(kind: string, name: unknown, namespace: unknown): string {
  const own = typeof name === 'string' ? excerpt(name) : '<unnamed>';
  if (!NAMESPACED_KINDS.has(kind)) return own;
  return `${typeof namespace === 'string' ? excerpt(namespace) : DEFAULT_NAMESPACE}/${own}`;
}

function objectName(value: Record<string, unknown>, kind: string): string {
  const meta = (value.metadata ?? {}) as Record<string, unknown>;
  return qualifiedName(kind, meta.name, meta.namespace);
}

function zodMessage(
  issue: z.core.$ZodIssue,
  doc: ManifestDocument,
): { path: PropertyKey[]; message: string }[] {
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((k) => ({ path: [...issue.path, k], message: `unknown field '${excerpt(k)}'` }));
  }
  if (issue.code === 'invalid_type' && valueAt(doc.value, issue.path) === undefined) {
    return [{ path: issue.path, message: 'required field is missing' }];
  }
  if (issue.code === 'invalid_value' && issue.values.length === 1) {
    return [{ path: issue.path, message: `must be ${JSON.stringify(issue.values[0])}` }];
  }
  if (issue.code === 'invalid_value') {
    return [
      {
        path: issue.path,
        message: `must be one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`,
      },
    ];
  }
  if (issue.code === 'invalid_union') {
    return [
      {
        path: issue.path,
        message: `invalid value ${excerpt(JSON.stringify(valueAt(doc.value, issue.path)) ?? 'undefined')}`,
      },
    ];
  }
  return [{ path: issue.path, message: issue.message }];
}

function valueAt(value: unknown, path: readonly PropertyKey[]): unknown {
  let v = value;
  for (const k of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<PropertyKey, unknown>)[k];
  }
  return v;
}

function readPrefilterFile(raw: RawPrefilter, loc: Located, issues: ManifestIssue[]): string[] {
  const rel = raw.spec.file;
  if (!rel) return [];
  const path = resolve(dirname(loc.file), rel);
  let text: string;
  try {
    text = readBoundedFile(path);
  } catch (e) {
    issues.push({
      file: loc.file,
      line: loc.lineOf(['spec', 'file']),
      kind: loc.kind,
      object: loc.object,
      field: 'spec.file',
      message:
        e instanceof InputLimitError
          ? e.message
          : `cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`,
    });
    return [];
  }
  const out: string[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const entry = (lines[i] as string).replace(/#.*/, '').trim();
    if (entry === '') continue;
    // Stored as the agents read it back: a prefix (a bare address becomes /32 or /128), host bits
    // cleared, so what is validated here is exactly what every node will parse.
    const v4 = parseIpv4CidrRange(entry);
    if (v4) {
      out.push(`${formatIpv4(v4[0])}/${32 - Math.log2(v4[1] - v4[0] + 1)}`);
      continue;
    }
    const cidr = parseCidr(entry.includes('/') ? entry : `${entry}/128`);
    if (!cidr) {
      issues.push({
        file: path,
        line: i + 1,
        kind: loc.kind,
        object: loc.object,
        field: 'spec.file',
        message: `'${excerpt(entry)}' is not a valid CIDR or address`,
      });
      continue;
    }
    out.push(formatCidr(cidr));
  }
  return out;
}

type Converter = (raw: never, source: SourceRef) => object;

/** Kinds converted by one function each (Prefilter also reads the file it names: see convertObject). */
const CONVERTERS: Readonly<Record<string, Converter>> = {
  Namespace: (raw, source) => toNamespace(raw, source),
  Pod: (raw, source) => toPod(raw, source),
  Service: (raw, source) => toService(raw, source),
  EndpointSlice: (raw, source) => toEndpointSlice(raw, source),
  NetworkPolicy: (raw, source) => toNetworkPolicy(raw, source),
  GlobalPolicy: (raw, source) => toGlobalPolicy(raw, source),
};

/** The model's list each kind goes into. */
const MODEL_LISTS: Readonly<Record<string, (m: Model) => object[]>> = {
  Namespace: (m) => m.namespaces,
  Pod: (m) => m.pods,
  Service: (m) => m.services,
  EndpointSlice: (m) => m.endpointSlices,
  NetworkPolicy: (m) => m.networkPolicies,
  GlobalPolicy: (m) => m.globalPolicies,
  Prefilter: (m) => m.prefilters,
};

/** The model object of one checked document (a Prefilter's `spec.file` is read here: `reads` names it). */
function convertObject(
  raw: unknown,
  loc: Located,
  source: SourceRef,
  issues: ManifestIssue[],
  reads: string[],
): object {
  const convert = CONVERTERS[loc.kind];
  if (convert) return convert(raw as never, source);
  if (loc.kind !== 'Prefilter') throw new Error(`no converter for kind ${loc.kind}`);
  const p = raw as RawPrefilter;
  const inline = (p.spec.cidrs ?? []).map((c) =>
    formatCidr(parseCidr(c) as NonNullable<ReturnType<typeof parseCidr>>),
  );
  if (p.spec.file) reads.push(resolve(dirname(loc.file), p.spec.file));
  const cidrs = [...new Set([...inline, ...readPrefilterFile(p, loc, issues)])];
  return {
    name: p.metadata.name,
    cidrs,
    source,
    ...(p.spec.nodes ? { nodes: [...p.spec.nodes] } : {}),
  };
}

/** Reports an issue at a field of a converted object, located through the document it came from. */
type IssueAt = (obj: object, path: PropertyKey[], message: string) => void;

function issueReporter(locate: Map<object, Located>, issues: ManifestIssue[]): IssueAt {
  return (obj, path, message) => {
    const loc = locate.get(obj) as Located;
    issues.push({
      file: loc.file,
      line: loc.lineOf(path),
      kind: loc.kind,
      object: loc.object,
      field: formatPath(path),
      message,
    });
  };
}

/** Each object is defined once per kind; later definitions point at the first. */
function checkUnique(model: Model, locate: Map<object, Located>, issueAt: IssueAt): void {
  const unique = <T extends object>(items: T[], key: (t: T) => string, what: string): void => {
    const seen = new Map<string, T>();
    for (const item of items) {
      const k = key(item);
      const first = seen.get(k);
      if (first) {
        const src = locate.get(first) as Located;
        issueAt(
          item,
          ['metadata', 'name'],
          `duplicate ${what} '${k}' (first defined at ${src.file}:${src.lineOf(['metadata', 'name'])})`,
        );
      } else seen.set(k, item);
    }
  };
  unique(model.namespaces, (n) => n.name, 'Namespace');
  unique(model.pods, (p) => `${p.namespace}/${p.name}`, 'Pod');
  unique(model.services, (s) => `${s.namespace}/${s.name}`, 'Service');
  unique(model.networkPolicies, (p) => `${p.namespace}/${p.name}`, 'NetworkPolicy');
  unique(model.endpointSlices, (p) => `${p.namespace}/${p.name}`, 'EndpointSlice');
  unique(model.globalPolicies, (p) => p.name, 'GlobalPolicy');
  unique(model.prefilters, (p) => p.name, 'Prefilter');
}

function checkNamespacesDefined(model: Model, issueAt: IssueAt): void {
  const namespaces = new Set(model.namespaces.map((n) => n.name));
  for (const obj of [...model.pods, ...model.services, ...model.networkPolicies, ...model.endpointSlices]) {
    if (!namespaces.has(obj.namespace)) {
      issueAt(
        obj,
        ['metadata', 'namespace'],
        `namespace '${obj.namespace}' is not defined (add a Namespace manifest)`,
      );
    }
  }
}

/** Pod addresses are unique, and so are port names within a pod; returns who owns each address. */
function checkPods(model: Model, issueAt: IssueAt): Map<string, string> {
  const owners = new Map<string, string>();
  for (const pod of model.pods) {
    pod.ips.forEach((ip, i) => {
      const owner = owners.get(ip);
      if (owner)
        issueAt(
          pod,
          ['status', i === 0 ? 'podIP' : 'podIPs'],
          `address ${ip} is already used by pod ${owner}`,
        );
      else owners.set(ip, `${pod.namespace}/${pod.name}`);
    });
    const names = new Set<string>();
    for (const port of pod.ports) {
      if (port.name === undefined) continue;
      if (names.has(port.name))
        issueAt(pod, ['spec', 'containers'], `port name '${port.name}' is used twice in the pod`);
      names.add(port.name);
    }
  }
  return owners;
}

/** An EndpointSlice belongs to a Service without a selector (one with a selector takes its pods). */
function checkEndpointSlices(model: Model, issueAt: IssueAt): void {
  const services = new Map(model.services.map((s) => [`${s.namespace}/${s.name}`, s]));
  for (const slice of model.endpointSlices) {
    const svc = services.get(`${slice.namespace}/${slice.serviceName}`);
    if (!svc)
      issueAt(
        slice,
        ['metadata', 'labels'],
        `no Service ${slice.namespace}/${slice.serviceName} for this EndpointSlice`,
      );
    else if (svc.selector)
      issueAt(
        slice,
        ['metadata', 'labels'],
        `Service ${slice.namespace}/${slice.serviceName} has a selector: its endpoints come from the pods it selects`,
      );
  }
}

/** A cluster IP is nobody else's address. */
function checkClusterIps(model: Model, owners: Map<string, string>, issueAt: IssueAt): void {
  for (const svc of model.services) {
    const stated = svc.clusterIPs ?? (svc.clusterIP ? [svc.clusterIP] : []);
    stated.forEach((ip, i) => {
      const owner = owners.get(ip);
      const field = i === 0 ? ['spec', 'clusterIP'] : ['spec', 'clusterIPs', i];
      if (owner) issueAt(svc, field, `address ${ip} is already used by ${owner}`);
      else owners.set(ip, `service ${svc.namespace}/${svc.name}`);
    });
  }
}

/**
 * What the checks across objects (crossValidate) read of an object besides its kind and key: a
 * pod's addresses and port names, a service's cluster IP, node ports, load-balancer addresses and
 * whether it has a selector, a slice's service. Keep in step with the checks.
 */
function crossChecked(kind: string, o: object): unknown {
  switch (kind) {
    case 'Pod': {
      const p = o as Pod;
      return [p.namespace, p.ips, p.ports.map((port) => port.name)];
    }
    case 'Service': {
      const s = o as Service;
      return [
        s.namespace,
        s.clusterIP,
        s.clusterIPs,
        s.selector === undefined,
        s.ports.map((p) => p.nodePort),
        s.loadBalancerIngress,
      ];
    }
    case 'EndpointSlice': {
      const e = o as EndpointSlice;
      return [e.namespace, e.serviceName];
    }
    default:
      return (o as { namespace?: string }).namespace;
  }
}

/**
 * Whether an object replaced by another of the same kind and key can change what the checks
 * across objects find. When it cannot, a caller holding a valid model (a source applying one
 * changed file) needs no new assembleModel to know the model with the replacement is valid too.
 */
export function replacementNeedsCrossChecks(kind: string, before: object, after: object): boolean {
  return !isDeepStrictEqual(crossChecked(kind, before), crossChecked(kind, after));
}

/**
 * A node port is one service's across the cluster (the API server's allocator), and a stated
 * load-balancer address is nobody else's.
 */
function checkExternalServices(model: Model, owners: Map<string, string>, issueAt: IssueAt): void {
  const portOwners = new Map<number, string>();
  for (const svc of model.services) {
    const name = `${svc.namespace}/${svc.name}`;
    const mine = new Set<number>();
    svc.ports.forEach((p, i) => {
      if (p.nodePort === undefined || mine.has(p.nodePort)) return;
      mine.add(p.nodePort);
      const owner = portOwners.get(p.nodePort);
      if (owner)
        issueAt(
          svc,
          ['spec', 'ports', i, 'nodePort'],
          `provided port is already allocated: node port ${p.nodePort} is used by service ${owner}`,
        );
      else portOwners.set(p.nodePort, name);
    });
    (svc.loadBalancerIngress ?? []).forEach((ip, i) => {
      const owner = owners.get(ip);
      if (owner && owner !== `service ${name}`)
        issueAt(
          svc,
          ['status', 'loadBalancer', 'ingress', i, 'ip'],
          `address ${ip} is already used by ${owner}`,
        );
      else owners.set(ip, `service ${name}`);
    });
  }
}

/** Checks that need the whole input: duplicates, references between objects, address clashes. */
function crossValidate(model: Model, locate: Map<object, Located>, issues: ManifestIssue[]): void {
  const issueAt = issueReporter(locate, issues);
  checkUnique(model, locate, issueAt);
  checkNamespacesDefined(model, issueAt);
  const owners = checkPods(model, issueAt);
  checkEndpointSlices(model, issueAt);
  checkClusterIps(model, owners, issueAt);
  checkExternalServices(model, owners, issueAt);
}

/** The documents and read issues of several files, in file order. */
function readAll(reads: readonly { documents: ManifestDocument[]; issues: ManifestIssue[] }[]): {
  documents: ManifestDocument[];
  issues: ManifestIssue[];
} {
  return { documents: reads.flatMap((r) => r.documents), issues: reads.flatMap((r) => r.issues) };
}

export function validateManifestTexts(texts: readonly ManifestText[]): {
  model?: Model;
  issues: ManifestIssue[];
} {
  const { documents, issues } = readAll(texts.map(({ file, text }) => readManifestDocuments(file, text)));
  return validateManifestDocuments(
    documents,
    issues,
    texts.map((t) => t.file),
  );
}

/** A document whose apiVersion/kind pair has no schema: points at the apiVersion when only that is wrong. */
function unknownKindIssue(
  doc: ManifestDocument,
  v: Record<string, unknown>,
  kind: string | undefined,
): ManifestIssue {
  const known = Object.keys(kindSchemas).join(', ');
  const suffix = `/${kind ?? ''}`;
  const versions = Object.keys(kindSchemas)
    .filter((k) => k.endsWith(suffix))
    .map((k) => k.slice(0, -suffix.length));
  if (kind && versions.length > 0)
    return {
      file: doc.file,
      line: doc.lineOf(['apiVersion']),
      kind,
      object: objectName(v, kind),
      field: 'apiVersion',
      message: `unknown apiVersion ${excerpt(JSON.stringify(v.apiVersion) ?? '')} for kind ${kind} (use ${versions.join(' or ')})`,
    };
  return {
    file: doc.file,
    line: doc.lineOf(kind ? ['kind'] : []),
    ...(kind ? { kind, object: objectName(v, kind) } : {}),
    field: kind ? 'kind' : 'apiVersion',
    message: kind
      ? `unknown kind ${excerpt(`${String(v.apiVersion)}/${kind}`)} (known: ${known})`
      : 'missing apiVersion/kind',
  };
}

/** Problems of a document that parsed but cannot be used, named by the kind and name it holds. */
function problemIssues(doc: ManifestDocument, problems: readonly ValueProblem[]): ManifestIssue[] {
  const v = doc.value;
  const meta = typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : undefined;
  const kind = typeof meta?.kind === 'string' ? excerpt(meta.kind) : undefined;
  return problems.map(({ path, message }) => ({
    file: doc.file,
    line: doc.lineOf(path),
    ...(kind && meta ? { kind, object: objectName(meta, kind) } : {}),
    field: formatPath(path),
    message,
  }));
}

/** One document checked against its kind's schema: the parsed object and where it is, or its issues. */
function parseDocument(doc: ManifestDocument): { loc: Located; data: unknown } | { issues: ManifestIssue[] } {
  const file = doc.file;
  const value = doc.value;
  if (doc.problems) return { issues: problemIssues(doc, doc.problems) };
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    return {
      issues: [
        {
          file,
          line: doc.lineOf([]),
          field: '',
          message: 'a manifest must be a mapping with apiVersion and kind',
        },
      ],
    };
  const v = value as Record<string, unknown>;
  const kind = typeof v.kind === 'string' ? v.kind : undefined;
  const kindKey = `${String(v.apiVersion)}/${String(kind)}`;
  const schema = kindSchemas[kindKey as KindKey];
  if (!kind || !schema) return { issues: [unknownKindIssue(doc, v, kind)] };
  const loc: Located = { file, lineOf: doc.lineOf, kind, object: objectName(v, kind) };
  // The plain shape of a hot kind is checked without zod; anything else (and every error) is zod's.
  if (PLAIN_CHECKS[kindKey]?.(value)) return { loc, data: value };
  const parsed = schema.safeParse(value);
  if (parsed.success) return { loc, data: parsed.data };
  return {
    issues: parsed.error.issues.flatMap((zi) =>
      zodMessage(zi, doc).map(({ path, message }) => ({
        file,
        line: doc.lineOf(path),
        kind,
        object: loc.object,
        field: formatPath(path),
        message,
      })),
    ),
  };
}

/** A model object converted from one checked document, and where it was written. */
export interface ConvertedObject extends Located {
  /** The model object (a Namespace, Pod, … of ./types.ts; which one `kind` says). */
  value: object;
}

/** Documents checked and converted one by one, before the checks that need the whole input. */
export interface ConvertedDocuments {
  objects: ConvertedObject[];
  issues: ManifestIssue[];
  /** Files read besides the documents (a Prefilter's `spec.file`): a cache of this must watch them too. */
  reads: string[];
}

/** Namespace and node names: one copy each for every file an agent keeps (util/intern.ts). */
const NAMES = new NameTable(new Set(['namespace', 'nodeName']));

/**
 * Checks each document against its kind's schema and converts it. The result depends on these
 * documents alone (and the files they name), so callers can keep it per file or per stored key
 * and convert again only what changed; assembleModel then does the checks across objects.
 */
export function convertDocuments(documents: readonly ManifestDocument[]): ConvertedDocuments {
  const out: ConvertedDocuments = { objects: [], issues: [], reads: [] };
  const strings = new Map<string, string>();
  const leaves: LeafTable = new Map();
  for (const doc of documents) {
    const checked = parseDocument(doc);
    if ('issues' in checked) {
      out.issues.push(...checked.issues);
      continue;
    }
    const { loc, data } = checked;
    const value = convertObject(data, loc, { file: doc.file, line: doc.lineOf([]) }, out.issues, out.reads);
    // Kept as long as the input is (an agent's cache): no slice of the text may keep it alive,
    // and equal ports, labels and lists of the file's objects are one.
    out.objects.push(internStrings({ ...loc, value }, strings, leaves, NAMES));
  }
  return out;
}

/**
 * The model of converted parts (in their order), after the checks across objects: duplicates,
 * references, address clashes. `files` orders the issues (default: the order parts name them in).
 * The model shares its objects with the parts: neither is changed afterwards.
 */
export function assembleModel(
  parts: readonly ConvertedDocuments[],
  files: readonly string[] = [...new Set(parts.flatMap((p) => p.objects.map((o) => o.file)))],
): {
  model?: Model;
  issues: ManifestIssue[];
} {
  const issues: ManifestIssue[] = parts.flatMap((p) => p.issues);
  const model = emptyModel();
  const locate = new Map<object, Located>();
  for (const part of parts)
    for (const o of part.objects) {
      (MODEL_LISTS[o.kind] as (m: Model) => object[])(model).push(o.value);
      locate.set(o.value, o);
    }
  if (!model.namespaces.some((n) => n.name === DEFAULT_NAMESPACE))
    model.namespaces.push(implicitDefaultNamespace());
  crossValidate(model, locate, issues);
  const order = new Map(files.map((f, i) => [f, i]));
  // Lists a manifest points to (Prefilter files) are not inputs themselves: their issues go last.
  const rank = (f: string): number => order.get(f) ?? Number.MAX_SAFE_INTEGER;
  issues.sort((a, b) => rank(a.file) - rank(b.file) || a.line - b.line);
  return issues.length > 0 ? { issues } : { model, issues };
}

/**
 * A converted object of a file, made when asked (ConvertedFile.objects): the line of a field is
 * found by reading the file again (no text is kept). A method on the class, not a closure per
 * object: one class keeps one hidden class.
 */
class FileObject implements ConvertedObject {
  constructor(
    readonly kind: string,
    /** A model object of ./types.ts: its `source` holds the file and the line it starts at. */
    readonly value: { source: SourceRef },
  ) {}

  // File, line and name are read from the model object, not kept twice.
  get file(): string {
    return this.value.source.file;
  }

  get object(): string {
    const { name, namespace } = this.value as { name?: unknown; namespace?: unknown };
    return qualifiedName(this.kind, name, namespace);
  }

  lineOf(path: readonly PropertyKey[]): number {
    const line = this.value.source.line;
    if (path.length === 0) return line;
    try {
      // The object's document is the one that starts on its line.
      const doc = readManifestDocuments(this.file).documents.find((d) => d.lineOf([]) === line);
      return doc?.lineOf(path) ?? line;
    } catch {
      return line; // gone since: the object's own line is the best there is
    }
  }
}

/** The kind all of `kinds` are, when they are one (most files hold one kind), else each. */
function oneKind(kinds: readonly string[]): string | readonly string[] {
  const first = kinds[0];
  return first !== undefined && kinds.every((k) => k === first) ? first : kinds;
}

/**
 * The converted objects of one manifest file, kept as long as the file is (an agent's cache holds
 * ~32,000 objects at 10k endpoints): their kinds and model objects alone. Each `objects` read
 * makes their wrappers anew, for the one pass that asks (assembling a model, comparing a file
 * with its last read); a wrapper kept per object was 1.5 MiB at 10k endpoints.
 */
export class ConvertedFile implements ConvertedDocuments {
  constructor(
    /** The manifest kind of every value, or of each one (the same order). */
    private readonly kinds: string | readonly string[],
    /** Model objects of ./types.ts, each with its `source` (this file, the line it starts at). */
    readonly values: readonly { source: SourceRef }[],
    readonly issues: ManifestIssue[],
    readonly reads: string[],
  ) {}

  static of(objects: readonly ConvertedObject[], issues: ManifestIssue[], reads: string[]): ConvertedFile {
    const values = objects.map((o) => o.value as { source: SourceRef });
    return new ConvertedFile(oneKind(objects.map((o) => o.kind)), values, issues, reads);
  }

  kindAt(i: number): string {
    return typeof this.kinds === 'string' ? this.kinds : (this.kinds[i] as string);
  }

  get objects(): ConvertedObject[] {
    return this.values.map((value, i) => new FileObject(this.kindAt(i), value));
  }

  /** This file with the objects at these positions replaced (each of the same file, converted alone). */
  withObjects(replaced: ReadonlyMap<number, ConvertedObject>): ConvertedFile {
    const values = this.values.map(
      (v, i) => (replaced.get(i)?.value as { source: SourceRef } | undefined) ?? v,
    );
    const kinds = values.map((_, i) => replaced.get(i)?.kind ?? this.kindAt(i));
    return new ConvertedFile(oneKind(kinds), values, this.issues, this.reads);
  }
}

/**
 * One manifest file read and converted, keeping nothing of its text or syntax tree: the line of a
 * field (asked only when a check across objects finds an issue) is found by reading the file
 * again, so a cache of converted files costs what its model objects cost.
 */
export function convertManifestFile(file: string, text?: string): ConvertedFile {
  const read = readManifestDocuments(file, text);
  const converted = convertDocuments(read.documents);
  // Nothing here may keep the documents (their text): only kinds and model objects are.
  return ConvertedFile.of(converted.objects, [...read.issues, ...converted.issues], converted.reads);
}

/**
 * Validates documents already read (from files, or objects kept in a datastore) as one input.
 * `files` orders the issues (default: the order documents name them in).
 */
export function validateManifestDocuments(
  documents: readonly ManifestDocument[],
  readIssues: readonly ManifestIssue[] = [],
  files: readonly string[] = [...new Set(documents.map((d) => d.file))],
): {
  model?: Model;
  issues: ManifestIssue[];
} {
  const converted = convertDocuments(documents);
  return assembleModel([{ ...converted, issues: [...readIssues, ...converted.issues] }], files);
}

export function validateManifests(paths: readonly string[]): {
  model?: Model;
  issues: ManifestIssue[];
  files: string[];
} {
  const files = expandManifestPaths(paths);
  const { documents, issues } = readAll(files.map((file) => readManifestDocuments(file)));
  return { ...validateManifestDocuments(documents, issues, files), files };
}

/** Loads and validates; throws ManifestError listing every problem. */
export function loadManifests(paths: readonly string[]): Model {
  const { model, issues } = validateManifests(paths);
  if (!model) throw new ManifestError(issues);
  return model;
}

export function loadManifestTexts(texts: readonly ManifestText[]): Model {
  const { model, issues } = validateManifestTexts(texts);
  if (!model) throw new ManifestError(issues);
  return model;
}
