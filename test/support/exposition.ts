/**
 * A promtool-style check of a Prometheus text exposition (format 0.0.4), with the conventions
 * Switchyard holds its agents to (docs/metrics.md): every family has HELP and TYPE before its
 * samples, counters end in `_total` and gauges never do, names are snake_case in base units,
 * histogram buckets are ordered, cumulative and end in +Inf, label names and values are valid and
 * values carry no spaces, and no series appears twice. Returns the problems found ([] when none).
 */
import { spawnSync } from 'node:child_process';

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Family {
  name: string;
  help?: string;
  type?: string;
  samples: Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: -?\d+)?$/;
const LABEL = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"(,|$)/;

function parseValue(v: string): number | undefined {
  // As Go's ParseFloat, which Prometheus uses: case does not matter.
  if (/^\+?inf$/i.test(v)) return Infinity;
  if (/^-inf$/i.test(v)) return -Infinity;
  if (/^nan$/i.test(v)) return NaN;
  return /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(v) ? Number(v) : undefined;
}

function parseLabels(text: string, problems: string[], line: string): Record<string, string> {
  const labels: Record<string, string> = {};
  let rest = text;
  while (rest.length > 0) {
    const m = LABEL.exec(rest);
    if (!m) {
      problems.push(`unparsable labels: ${line}`);
      return labels;
    }
    const [whole, name, raw] = m as unknown as [string, string, string];
    if (name in labels) problems.push(`label ${name} twice: ${line}`);
    labels[name] = raw.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    rest = rest.slice(whole.length);
  }
  return labels;
}

/** The family a sample belongs to: histogram and summary samples carry a suffix. */
function familyOf(name: string, families: Map<string, Family>): Family | undefined {
  const direct = families.get(name);
  if (direct) return direct;
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (!name.endsWith(suffix)) continue;
    const f = families.get(name.slice(0, -suffix.length));
    if (f && (f.type === 'histogram' || f.type === 'summary')) return f;
  }
  return undefined;
}

export function parseExposition(text: string): { families: Family[]; problems: string[] } {
  const problems: string[] = [];
  const families = new Map<string, Family>();
  const family = (name: string): Family => {
    let f = families.get(name);
    if (!f) families.set(name, (f = { name, samples: [] }));
    return f;
  };
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const meta = /^# (HELP|TYPE) (\S+)(?: (.*))?$/.exec(line);
    if (meta) {
      const [, what, name, rest] = meta as unknown as [string, 'HELP' | 'TYPE', string, string | undefined];
      const f = family(name);
      if (f.samples.length > 0) problems.push(`${name}: ${what} after its samples`);
      if (what === 'HELP') {
        if (f.help !== undefined) problems.push(`${name}: HELP twice`);
        f.help = rest ?? '';
      } else {
        if (f.type !== undefined) problems.push(`${name}: TYPE twice`);
        f.type = rest ?? '';
      }
      continue;
    }
    if (line.startsWith('#')) continue;
    const m = SAMPLE.exec(line);
    const value = m ? parseValue(m[3] as string) : undefined;
    if (!m || value === undefined) {
      problems.push(`unparsable sample: ${line}`);
      continue;
    }
    const name = m[1] as string;
    const f = familyOf(name, families);
    if (!f) {
      problems.push(`${name}: sample without HELP and TYPE`);
      continue;
    }
    f.samples.push({ name, labels: parseLabels(m[2] ?? '', problems, line), value });
  }
  return { families: [...families.values()], problems };
}

const seriesKey = (s: Sample, except = ''): string =>
  `${s.name}{${Object.entries(s.labels)
    .filter(([k]) => k !== except)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
    .join(',')}}`;

function checkHistogram(f: Family, problems: string[]): void {
  const groups = new Map<string, Sample[]>();
  const counts = new Map<string, number>();
  for (const s of f.samples) {
    const key = seriesKey({ ...s, name: f.name }, 'le');
    if (s.name === `${f.name}_bucket`) {
      if (s.labels.le === undefined) problems.push(`${f.name}: bucket without le`);
      groups.set(key, [...(groups.get(key) ?? []), s]);
    } else if (s.name === `${f.name}_count`) counts.set(key, s.value);
    else if (s.name !== `${f.name}_sum`) problems.push(`${s.name}: not a histogram sample of ${f.name}`);
  }
  for (const [key, buckets] of groups) {
    const les = buckets.map((b) => parseValue(b.labels.le ?? '') ?? NaN);
    if (les.some((le, i) => i > 0 && !(le > (les[i - 1] as number))))
      problems.push(`${key}: buckets not in increasing le order`);
    if (les[les.length - 1] !== Infinity) problems.push(`${key}: no +Inf bucket last`);
    if (buckets.some((b, i) => i > 0 && b.value < (buckets[i - 1] as Sample).value))
      problems.push(`${key}: bucket counts not cumulative`);
    if (counts.get(key) !== buckets[buckets.length - 1]?.value)
      problems.push(`${key}: _count differs from the +Inf bucket`);
  }
}

/** Switchyard's conventions on top of the format's rules. */
function checkFamily(f: Family, problems: string[]): void {
  if (!METRIC_NAME.test(f.name)) problems.push(`${f.name}: invalid metric name`);
  if (f.help === undefined || f.help === '') problems.push(`${f.name}: no HELP`);
  if (f.type === undefined) problems.push(`${f.name}: no TYPE`);
  if (f.name.startsWith('switchyard_') && !/^[a-z][a-z0-9_]*$/.test(f.name))
    problems.push(`${f.name}: not snake_case`);
  if (/_(milli|micro|nano)?seconds?_total_|_ms$|_ms_|milliseconds|_kb$|_mb$/.test(f.name))
    problems.push(`${f.name}: not in base units (seconds, bytes)`);
  if (f.type === 'counter' && !f.name.endsWith('_total'))
    problems.push(`${f.name}: counter not ending in _total`);
  if (f.type !== 'counter' && f.name.endsWith('_total'))
    problems.push(`${f.name}: ${f.type} ending in _total`);
  if (f.type === 'histogram') checkHistogram(f, problems);
  else
    for (const s of f.samples)
      if (s.name !== f.name)
        problems.push(`${s.name}: sample name differs from its ${f.type} family ${f.name}`);
  for (const s of f.samples)
    for (const [k, v] of Object.entries(s.labels)) {
      if (!LABEL_NAME.test(k) || k.startsWith('__'))
        problems.push(`${seriesKey(s)}: invalid label name ${k}`);
      if (/\s/.test(v)) problems.push(`${seriesKey(s)}: label ${k} has a space in '${v}'`);
    }
}

/** Every problem of the exposition; [] when it follows the format and the conventions. */
export function checkExposition(text: string): string[] {
  const { families, problems } = parseExposition(text);
  const seen = new Set<string>();
  for (const f of families) {
    checkFamily(f, problems);
    for (const s of f.samples) {
      const key = seriesKey(s);
      if (seen.has(key)) problems.push(`${key}: duplicate series`);
      seen.add(key);
    }
  }
  return problems;
}

/** All samples, flattened, for assertions. */
export function samplesOf(text: string): Sample[] {
  return parseExposition(text).families.flatMap((f) => f.samples);
}

/**
 * `promtool check metrics` on the text: undefined when promtool is not installed (scripts/setup.sh
 * installs Debian's prometheus package, which ships it), else its complaints ([] when none).
 */
export function promtoolProblems(text: string): string[] | undefined {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  if (r.error) return undefined;
  const out = `${r.stdout}${r.stderr}`.trim();
  return r.status === 0 && out === '' ? [] : out.split('\n').filter((l) => l !== '');
}
