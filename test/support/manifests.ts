/**
 * Builders for small inline manifests, and a compiled "cluster" to ask verdicts of, so semantic
 * tests read like the Kubernetes documentation examples they reproduce.
 */
import { expect } from 'vitest';
import { stringify } from 'yaml';
import {
  allocate,
  buildIR,
  evaluate,
  type AllocateOptions,
  type BuildOptions,
  type Verdict,
} from '../../src/calc/index.js';
import type { IR, Protocol } from '../../src/ir/types.js';
import { formatIssue, validateManifestTexts, type ManifestIssue, type Model } from '../../src/model/index.js';

export type Manifest = Record<string, unknown>;
export type Labels = Record<string, string>;

export interface ContainerPortSpec {
  name?: string;
  containerPort: number;
  protocol?: 'TCP' | 'UDP' | 'SCTP';
}

export interface PodOptions {
  labels?: Labels;
  /** status.podIP; tests use fixed addresses in 198.18.0.0/16. */
  ip?: string;
  node?: string;
  ports?: ContainerPortSpec[];
}

export function namespace(name: string, labels: Labels = {}): Manifest {
  return {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name, ...(Object.keys(labels).length > 0 ? { labels } : {}) },
  };
}

export function pod(ns: string, name: string, opts: PodOptions = {}): Manifest {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: ns, ...(opts.labels ? { labels: opts.labels } : {}) },
    spec: {
      ...(opts.node ? { nodeName: opts.node } : {}),
      containers: [{ name: 'main', ...(opts.ports ? { ports: opts.ports } : {}) }],
    },
    ...(opts.ip ? { status: { podIP: opts.ip } } : {}),
  };
}

export function networkPolicy(ns: string, name: string, spec: Record<string, unknown>): Manifest {
  return {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: { name, namespace: ns },
    spec,
  };
}

export function globalPolicy(name: string, spec: Record<string, unknown>): Manifest {
  return { apiVersion: 'switchyard.dev/v1alpha1', kind: 'GlobalPolicy', metadata: { name }, spec };
}

export function prefilter(name: string, spec: Record<string, unknown>): Manifest {
  return { apiVersion: 'switchyard.dev/v1alpha1', kind: 'Prefilter', metadata: { name }, spec };
}

export function service(ns: string, name: string, spec: Record<string, unknown>): Manifest {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: ns }, spec };
}

/** Manifests as one multi-document YAML text. */
export function toYaml(manifests: readonly Manifest[]): string {
  // Quoted as kubectl needs them: a namespace named `y` is a boolean to YAML 1.1.
  return manifests.map((m) => stringify(m, { version: '1.1' })).join('---\n');
}

/** Validates the manifests as one file; fails the test with every issue when they are invalid. */
export function modelOf(manifests: readonly Manifest[], file = 'cluster.yaml'): Model {
  const { model, issues } = validateManifestTexts([{ file, text: toYaml(manifests) }]);
  if (!model) throw new Error(`test manifests are invalid:\n${issues.map(formatIssue).join('\n')}`);
  return model;
}

/**
 * The IR of a model with no stored state behind it (what `switchyard compile` does): allocated
 * afresh, then built.
 */
export function compileIR(model: Model, opts: AllocateOptions & BuildOptions = {}): IR {
  const { nodeCount, dualStackPods, ...build } = opts;
  const alloc = {
    ...(nodeCount === undefined ? {} : { nodeCount }),
    ...(dualStackPods === undefined ? {} : { dualStackPods }),
  };
  return buildIR(model, allocate(model, {}, alloc), build);
}

/** A compiled model plus shorthands for asking the reference evaluator about pods and addresses. */
export class Cluster {
  readonly model: Model;
  readonly ir: IR;

  constructor(
    manifests: readonly Manifest[],
    opts: AllocateOptions & BuildOptions = {},
    file = 'cluster.yaml',
  ) {
    this.model = modelOf(manifests, file);
    this.ir = compileIR(this.model, opts);
  }

  /** `namespace/pod` → its first address; anything else is taken as an address already. */
  address(podOrAddress: string): string {
    if (!podOrAddress.includes('/')) return podOrAddress;
    const ep = this.ir.endpoints.find((e) => e.id === podOrAddress);
    if (!ep) throw new Error(`no endpoint ${podOrAddress}`);
    const a = ep.addresses[0];
    if (a === undefined) throw new Error(`endpoint ${podOrAddress} has no address`);
    return a;
  }

  verdict(from: string, to: string, protocol: Protocol = 'TCP', port?: number): Verdict {
    return evaluate(this.ir, {
      src: this.address(from),
      dst: this.address(to),
      protocol,
      ...(port !== undefined ? { dport: port } : {}),
    });
  }

  allowed(from: string, to: string, protocol: Protocol = 'TCP', port?: number): boolean {
    return this.verdict(from, to, protocol, port).allowed;
  }
}

/** 1-based number of the `occurrence`-th line of `text` that contains `needle`. */
export function lineContaining(text: string, needle: string, occurrence = 1): number {
  const lines = text.split('\n');
  let seen = 0;
  for (let i = 0; i < lines.length; i++) {
    if ((lines[i] as string).includes(needle) && ++seen === occurrence) return i + 1;
  }
  throw new Error(`'${needle}' (occurrence ${occurrence}) is not in the text`);
}

export interface ExpectedIssue {
  file: string;
  line: number;
  /** Kind as printed, e.g. NetworkPolicy; undefined for documents without a recognisable kind. */
  kind?: string;
  /** `namespace/name` or `name`. */
  object?: string;
  field: string;
  message: RegExp;
}

/**
 * Asserts that exactly one issue has this field and that it names the file, line, kind, object
 * and field both as data and in its formatted `file:line: Kind ns/name: field: message` text.
 */
export function expectIssue(issues: readonly ManifestIssue[], e: ExpectedIssue): ManifestIssue {
  const atField = issues.filter((i) => i.file === e.file && i.field === e.field && e.message.test(i.message));
  expect(atField, `issues: ${issues.map(formatIssue).join('\n')}`).toHaveLength(1);
  const issue = atField[0] as ManifestIssue;
  expect({ line: issue.line, kind: issue.kind, object: issue.object }).toEqual({
    line: e.line,
    kind: e.kind,
    object: e.object,
  });
  const what = e.kind ? `${e.kind} ${e.object ?? '<unnamed>'}` : '<unknown kind>';
  const text = formatIssue(issue);
  expect(text.startsWith(`${e.file}:${e.line}: ${what}: ${e.field || '(document)'}: `), text).toBe(true);
  expect(text).toMatch(e.message);
  return issue;
}
