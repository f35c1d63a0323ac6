/**
 * Hubble's flow filters (`hubble observe --pod … --verdict DROPPED …`) for switchyard's flow
 * records: parsing the flags into a `FlowQuery` (plain JSON data) and matching records against it.
 * Pure: the CLI and the agent can share it, and it is unit-tested without an agent.
 *
 * Semantics, as Hubble's: different filters combine with AND, repeated values of one filter with
 * OR. An "either end" filter (`--pod`, `--namespace`, `--label`, `--ip`, `--port`) holds when the
 * source or the destination satisfies it, each such filter on its own; `--from-*` filters hold for
 * the source, `--to-*` for the destination.
 */
import { selectorMatches } from '../calc/selectors.js';
import type { LabelSelector, LabelSelectorRequirement } from '../model/types.js';
import { cidrContains, hostCidr, parseAddress, parseCidr, type Cidr } from '../util/ip.js';
import type { Flow, FlowVerdict } from './flow-types.js';

/** What one end of a flow must be; every present field must hold, values within one field OR. */
export interface PeerCriteria {
  /** `namespace/name` or a prefix of it (as Hubble's `--pod`), e.g. `shop/db` or `shop/web-`. */
  pods?: string[];
  namespaces?: string[];
  labels?: LabelSelector[];
  /** Addresses or CIDRs. */
  ips?: string[];
  ports?: number[];
}

export interface FlowQuery {
  verdicts?: FlowVerdict[];
  /** Upper case: `TCP`, `UDP`, `SCTP`, `ICMP`. */
  protocols?: string[];
  /** Substrings of the policy label or rule id. */
  policies?: string[];
  /** ISO time: records last seen at or after it. */
  since?: string;
  /** Each filter holds for the source or the destination. */
  either?: PeerCriteria;
  from?: PeerCriteria;
  to?: PeerCriteria;
}

/** The command line's filter flags, repeatable ones as lists (commander collects them). */
export interface FlowFilterFlags {
  verdict?: string[];
  protocol?: string[];
  policy?: string[];
  since?: string;
  /** Qualifies pod names without a namespace, and is itself an either-end filter. */
  namespace?: string[];
  pod?: string[];
  fromPod?: string[];
  toPod?: string[];
  label?: string[];
  fromLabel?: string[];
  toLabel?: string[];
  ip?: string[];
  fromIp?: string[];
  toIp?: string[];
  port?: string[];
  fromPort?: string[];
  toPort?: string[];
}

export class FlowFilterError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FlowFilterError';
  }
}

/**
 * Every spelling a user may know a verdict by: ours, the table's, Hubble's, Calico's. Hubble's
 * DROPPED is any drop: a policy denial or the kernel's own (`kernel` alone is the latter).
 */
const VERDICT_NAMES: Record<string, FlowVerdict[]> = {
  allow: ['allow'],
  allowed: ['allow'],
  forwarded: ['allow'],
  deny: ['deny'],
  denied: ['deny'],
  drop: ['deny', 'dropped'],
  dropped: ['deny', 'dropped'],
  kernel: ['dropped'],
  log: ['log'],
  logged: ['log'],
  audit: ['log'],
};

export function parseVerdict(text: string): FlowVerdict[] {
  const v = VERDICT_NAMES[text.trim().toLowerCase()];
  if (!v)
    throw new FlowFilterError(
      `--verdict must be allow (FORWARDED), deny, kernel, dropped (deny or kernel) or log (AUDIT), in any case, not '${text}'`,
    );
  return v;
}

const PROTOCOLS = ['TCP', 'UDP', 'SCTP', 'ICMP'];

export function parseProtocol(text: string): string {
  const p = text.trim().toUpperCase();
  if (!PROTOCOLS.includes(p))
    throw new FlowFilterError(`--protocol must be tcp, udp, sctp or icmp, not '${text}'`);
  return p;
}

function parsePort(flag: string, text: string): number {
  const n = Number(text);
  if (!/^\d{1,5}$/.test(text.trim()) || n < 1 || n > 65535)
    throw new FlowFilterError(`${flag} must be a port 1-65535, not '${text}'`);
  return n;
}

function parseIp(flag: string, text: string): string {
  const t = text.trim();
  if (!parseAddress(t) && !parseCidr(t))
    throw new FlowFilterError(
      `${flag} must be an address or a CIDR (198.18.0.0/16, fd00:5957::/32), not '${text}'`,
    );
  return t;
}

const DURATION_UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `5m`, `1h30m`, `90s`, `2d`, `500ms` → milliseconds; undefined when it is not a duration. */
export function parseDuration(text: string): number | undefined {
  const t = text.trim();
  if (!/^(\d+(\.\d+)?(ms|s|m|h|d))+$/.test(t)) return undefined;
  let ms = 0;
  for (const m of t.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d)/g))
    ms += Number(m[1]) * (DURATION_UNITS_MS[m[2] as string] ?? 0);
  return ms;
}

/** `--since`: a duration before `now` (`5m`) or an RFC 3339 time → ISO time. */
export function parseSince(text: string, now: number): string {
  const ms = parseDuration(text);
  if (ms !== undefined) return new Date(now - ms).toISOString();
  const rfc3339 = /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/i;
  const at = rfc3339.test(text.trim()) ? Date.parse(text.trim()) : NaN;
  if (Number.isNaN(at))
    throw new FlowFilterError(
      `--since must be a duration (30s, 5m, 1h30m) or an RFC 3339 time (2026-12-05T04:00:00Z), not '${text}'`,
    );
  return new Date(at).toISOString();
}

/** Splits on commas outside parentheses: `a in (x,y),b` → [`a in (x,y)`, `b`]. */
function requirements(text: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let current = '';
  for (const ch of text) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      parts.push(current);
      current = '';
    } else current += ch;
  }
  parts.push(current);
  return parts.map((p) => p.trim());
}

const KEY = /^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$/;

/** A key as Hubble shows it (`k8s:app`) or as Kubernetes does (`app`). */
function labelKey(flag: string, raw: string, selector: string): string {
  const key = raw.trim().replace(/^k8s:/, '');
  if (!KEY.test(key)) throw new FlowFilterError(`${flag} '${selector}': '${raw.trim()}' is not a label key`);
  return key;
}

/**
 * A kubectl label selector: `app=web`, `app==web`, `tier!=db`, `app in (a,b)`, `app notin (a)`,
 * `app` (exists), `!app` (does not exist), joined by commas (all must hold).
 */
export function parseLabelSelector(text: string, flag = '--label'): LabelSelector {
  const sel: LabelSelector = { matchLabels: {}, matchExpressions: [] };
  for (const req of requirements(text)) {
    if (req === '') throw new FlowFilterError(`${flag} '${text}': an empty requirement`);
    const set = /^(\S+)\s+(in|notin)\s*\((.*)\)$/.exec(req);
    const cmp = /^([^!=\s]+)\s*(==|=|!=)\s*(.*)$/.exec(req);
    let expression: LabelSelectorRequirement;
    if (set) {
      const values = (set[3] as string).split(',').map((v) => v.trim());
      if (values.some((v) => v === ''))
        throw new FlowFilterError(`${flag} '${text}': '${req}' has an empty value`);
      expression = {
        key: labelKey(flag, set[1] as string, text),
        operator: set[2] === 'in' ? 'In' : 'NotIn',
        values,
      };
    } else if (cmp) {
      const key = labelKey(flag, cmp[1] as string, text);
      const value = (cmp[3] as string).trim();
      if (cmp[2] !== '!=') {
        sel.matchLabels[key] = value;
        continue;
      }
      expression = { key, operator: 'NotIn', values: [value] };
    } else if (req.startsWith('!')) {
      expression = { key: labelKey(flag, req.slice(1), text), operator: 'DoesNotExist', values: [] };
    } else {
      expression = { key: labelKey(flag, req, text), operator: 'Exists', values: [] };
    }
    sel.matchExpressions.push(expression);
  }
  return sel;
}

/** `ns/name` stays; a bare `name` takes each `-n` namespace (or `default`, as kubectl). */
function podNames(flag: string, given: readonly string[], namespaces: readonly string[]): string[] {
  return given.flatMap((p) => {
    const t = p.trim();
    if (t === '' || t.split('/').length > 2)
      throw new FlowFilterError(`${flag} must be NAMESPACE/NAME or NAME, not '${p}'`);
    if (t.includes('/')) return [t];
    return (namespaces.length > 0 ? namespaces : ['default']).map((ns) => `${ns}/${t}`);
  });
}

function criteria(c: PeerCriteria): PeerCriteria | undefined {
  const present = Object.entries(c).filter(([, v]) => Array.isArray(v) && v.length > 0);
  return present.length > 0 ? (Object.fromEntries(present) as PeerCriteria) : undefined;
}

/** The flags → a query; throws FlowFilterError naming the flag and the value it refused. */
export function parseFlowQuery(flags: FlowFilterFlags, now: number): FlowQuery {
  const namespaces = (flags.namespace ?? []).map((n) => n.trim());
  const labels = (flag: string, list?: string[]) => (list ?? []).map((l) => parseLabelSelector(l, flag));
  const ips = (flag: string, list?: string[]) => (list ?? []).map((l) => parseIp(flag, l));
  const ports = (flag: string, list?: string[]) => (list ?? []).map((l) => parsePort(flag, l));
  const either = criteria({
    pods: podNames('--pod', flags.pod ?? [], namespaces),
    namespaces,
    labels: labels('--label', flags.label),
    ips: ips('--ip', flags.ip),
    ports: ports('--port', flags.port),
  });
  const from = criteria({
    pods: podNames('--from-pod', flags.fromPod ?? [], namespaces),
    labels: labels('--from-label', flags.fromLabel),
    ips: ips('--from-ip', flags.fromIp),
    ports: ports('--from-port', flags.fromPort),
  });
  const to = criteria({
    pods: podNames('--to-pod', flags.toPod ?? [], namespaces),
    labels: labels('--to-label', flags.toLabel),
    ips: ips('--to-ip', flags.toIp),
    ports: ports('--to-port', flags.toPort),
  });
  const verdicts = [...new Set((flags.verdict ?? []).flatMap(parseVerdict))];
  const protocols = [...new Set((flags.protocol ?? []).map(parseProtocol))];
  return {
    ...(verdicts.length ? { verdicts } : {}),
    ...(protocols.length ? { protocols } : {}),
    ...(flags.policy?.length ? { policies: flags.policy } : {}),
    ...(flags.since !== undefined ? { since: parseSince(flags.since, now) } : {}),
    ...(either ? { either } : {}),
    ...(from ? { from } : {}),
    ...(to ? { to } : {}),
  };
}

/** True when the query filters anything. */
export function isFiltering(q: FlowQuery): boolean {
  return Object.keys(q).length > 0;
}

/** One end of a flow as the filters see it. */
interface End {
  pod?: string;
  namespace?: string;
  labels?: Record<string, string>;
  address: string;
  port: number;
}

/**
 * The pods at both ends: the agent resolves them from the desired state; a record from an agent
 * that did not still names its own endpoint (egress: the source, ingress: the destination).
 */
export function flowEnds(f: Flow): { source: End; destination: End } {
  const sourcePod = f.source?.pod ?? (f.direction === 'egress' ? f.endpoint : undefined);
  const destinationPod = f.destination?.pod ?? (f.direction === 'ingress' ? f.endpoint : undefined);
  const end = (
    pod: string | undefined,
    labels: Record<string, string> | undefined,
    address: string,
    port: number,
  ): End => ({
    ...(pod ? { pod, namespace: pod.split('/')[0] as string } : {}),
    ...(labels ? { labels } : {}),
    address,
    port,
  });
  return {
    source: end(sourcePod, f.source?.labels, f.src, f.sport),
    destination: end(destinationPod, f.destination?.labels, f.dst, f.dport),
  };
}

type EndTest = (e: End) => boolean;

/** One test per present criterion, so an either-end query can try each on both ends. */
function endTests(c: PeerCriteria): EndTest[] {
  const tests: EndTest[] = [];
  const { pods, namespaces, labels, ips, ports } = c;
  if (pods) tests.push((e) => e.pod !== undefined && pods.some((p) => (e.pod as string).startsWith(p)));
  if (namespaces) tests.push((e) => e.namespace !== undefined && namespaces.includes(e.namespace));
  if (labels)
    tests.push((e) => e.labels !== undefined && labels.some((s) => selectorMatches(s, e.labels ?? {})));
  if (ips) {
    const cidrs: Cidr[] = ips.map((t) => {
      const a = parseAddress(t);
      return a ? hostCidr(a) : (parseCidr(t) as Cidr);
    });
    tests.push((e) => {
      const a = parseAddress(e.address);
      return a !== undefined && cidrs.some((c) => cidrContains(c, a));
    });
  }
  if (ports) tests.push((e) => ports.includes(e.port));
  return tests;
}

/** Compiles a query once into a test for many records. */
export function flowMatcher(q: FlowQuery): (f: Flow) => boolean {
  const since = q.since !== undefined ? Date.parse(q.since) : undefined;
  const either = q.either ? endTests(q.either) : [];
  const from = q.from ? endTests(q.from) : [];
  const to = q.to ? endTests(q.to) : [];
  return (f) => {
    if (q.verdicts && !q.verdicts.includes(f.verdict)) return false;
    if (q.protocols && !q.protocols.includes(f.protocol.toUpperCase())) return false;
    if (q.policies && !q.policies.some((p) => f.policy?.includes(p) || f.rule.includes(p))) return false;
    if (since !== undefined && Date.parse(f.lastSeen) < since) return false;
    const { source, destination } = flowEnds(f);
    return (
      either.every((t) => t(source) || t(destination)) &&
      from.every((t) => t(source)) &&
      to.every((t) => t(destination))
    );
  };
}
