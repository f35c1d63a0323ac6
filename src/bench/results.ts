/**
 * Bench results: the report `switchyard bench --json` writes and the advisor and the console
 * read, and its chart. A leaf module (it imports nothing of the project), so a reader of results
 * does not pull in the scenarios, the labs and the backends that produced them.
 */

/** One measured configuration of one backend in a scenario. */
export interface BenchRow {
  backend: string;
  params: Record<string, string | number>;
  median: number;
  p10: number;
  p90: number;
  samples: number[];
}

export interface BenchScenarioResult {
  name: string;
  unit: string;
  /** Whether a lower figure is better (latency, ns/packet) or a higher one (rates). */
  better: 'lower' | 'higher';
  rows: BenchRow[];
  notes?: string[];
}

export interface BenchReport {
  machine: { kernel: string; cpus: number; node: string };
  scenarios: BenchScenarioResult[];
}

// ---------------------------------------------------------------------------------------------
// The chart: one SVG bar chart per scenario, a group per parameter set, a bar per backend at its
// median, a whisker from p10 to p90. A hundred lines of string building instead of vega-lite plus
// a renderer (~10 MB of dependencies) for charts this simple; the output is plain, diffable SVG.

const PALETTE = ['#4269d0', '#efb118', '#ff725c', '#6cc5b0', '#3ca951', '#ff8ab7', '#a463f2', '#97bbf5'];
const WIDTH = 720;
const HEIGHT = 360;
const MARGIN = { top: 40, right: 150, bottom: 70, left: 80 };

function escape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function paramsLabel(params: Record<string, string | number>, shared: ReadonlySet<string>): string {
  const entries = Object.entries(params).filter(([k, v]) => !shared.has(`${k}=${v}`));
  return entries.length === 0 ? 'all' : entries.map(([k, v]) => `${k}=${v}`).join(' ');
}

/** Parameters every row has with the same value say nothing about a group: they go in the title. */
function sharedParams(s: BenchScenarioResult): Set<string> {
  const [first, ...rest] = s.rows.map((r) => new Set(Object.entries(r.params).map(([k, v]) => `${k}=${v}`)));
  return new Set([...(first ?? [])].filter((kv) => rest.every((r) => r.has(kv))));
}

function niceNumber(n: number): string {
  const a = Math.abs(n);
  const short = (x: number): string => String(parseFloat(x.toPrecision(3)));
  if (a >= 1e9) return `${short(n / 1e9)}G`;
  if (a >= 1e6) return `${short(n / 1e6)}M`;
  if (a >= 1e3) return `${short(n / 1e3)}k`;
  return short(n);
}

export function scenarioSvg(s: BenchScenarioResult): string {
  const shared = sharedParams(s);
  const label = (params: Record<string, string | number>): string => paramsLabel(params, shared);
  const groups = [...new Set(s.rows.map((r) => label(r.params)))];
  const backends = [...new Set(s.rows.map((r) => r.backend))];
  const values = s.rows.flatMap((r) => [r.p10, r.median, r.p90]).filter((v) => Number.isFinite(v) && v > 0);
  const max = Math.max(...values, 1e-9);
  const min = Math.min(...values, max);
  // Medians that differ by orders of magnitude (10 vs 50k rules) would flatten on a linear axis.
  const log = max / min > 50;
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const lo = log ? Math.log10(min) - 0.1 : 0;
  const hi = log ? Math.log10(max) + 0.05 : max * 1.08;
  const y = (v: number): number => {
    const t = log ? (Math.log10(Math.max(v, min)) - lo) / (hi - lo) : v / hi;
    return MARGIN.top + plotH * (1 - Math.min(1, Math.max(0, t)));
  };
  const groupW = plotW / Math.max(1, groups.length);
  const barW = Math.min(40, (groupW * 0.8) / Math.max(1, backends.length));
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${MARGIN.left}" y="22" font-size="14" font-weight="bold">${escape(s.name)}: ${escape(s.unit)} (${s.better} is better)${shared.size ? ` · ${escape([...shared].join(' '))}` : ''}</text>`,
  );
  const ticks = log
    ? Array.from({ length: Math.floor(hi) - Math.ceil(lo) + 1 }, (_, i) => 10 ** (Math.ceil(lo) + i))
    : Array.from({ length: 5 }, (_, i) => (hi / 4) * i);
  for (const t of ticks) {
    const ty = y(t);
    parts.push(
      `<line x1="${MARGIN.left}" x2="${MARGIN.left + plotW}" y1="${ty.toFixed(1)}" y2="${ty.toFixed(1)}" stroke="#ddd"/>`,
      `<text x="${MARGIN.left - 6}" y="${(ty + 4).toFixed(1)}" text-anchor="end">${niceNumber(t)}</text>`,
    );
  }
  parts.push(
    `<text transform="translate(18 ${MARGIN.top + plotH / 2}) rotate(-90)" text-anchor="middle">${escape(s.unit)}${log ? ' (log)' : ''}</text>`,
  );
  groups.forEach((g, gi) => {
    const gx = MARGIN.left + gi * groupW + (groupW - barW * backends.length) / 2;
    backends.forEach((b, bi) => {
      const row = s.rows.find((r) => r.backend === b && label(r.params) === g);
      if (!row || !Number.isFinite(row.median)) return;
      const x = gx + bi * barW;
      const top = y(row.median);
      const color = PALETTE[bi % PALETTE.length] as string;
      parts.push(
        `<rect x="${x.toFixed(1)}" y="${top.toFixed(1)}" width="${(barW - 2).toFixed(1)}" height="${(MARGIN.top + plotH - top).toFixed(1)}" fill="${color}"><title>${escape(`${b} ${g}: median ${niceNumber(row.median)} ${s.unit} (p10 ${niceNumber(row.p10)}, p90 ${niceNumber(row.p90)}, n=${row.samples.length})`)}</title></rect>`,
        `<line x1="${(x + barW / 2 - 1).toFixed(1)}" x2="${(x + barW / 2 - 1).toFixed(1)}" y1="${y(row.p10).toFixed(1)}" y2="${y(row.p90).toFixed(1)}" stroke="#222"/>`,
      );
    });
    const cx = (MARGIN.left + gi * groupW + groupW / 2).toFixed(1);
    const lines = g
      .split(' ')
      .map((l, i) => `<tspan x="${cx}" dy="${i === 0 ? 0 : 12}">${escape(l)}</tspan>`);
    parts.push(
      `<text x="${cx}" y="${MARGIN.top + plotH + 16}" text-anchor="middle">${lines.join('')}</text>`,
    );
  });
  parts.push(
    `<line x1="${MARGIN.left}" x2="${MARGIN.left + plotW}" y1="${MARGIN.top + plotH}" y2="${MARGIN.top + plotH}" stroke="#333"/>`,
  );
  backends.forEach((b, bi) => {
    const ly = MARGIN.top + 10 + bi * 18;
    parts.push(
      `<rect x="${WIDTH - MARGIN.right + 16}" y="${ly - 9}" width="12" height="12" fill="${PALETTE[bi % PALETTE.length]}"/>`,
      `<text x="${WIDTH - MARGIN.right + 34}" y="${ly + 1}">${escape(b)}</text>`,
    );
  });
  parts.push(
    `<text x="${MARGIN.left}" y="${HEIGHT - 12}" fill="#666">bars: median; whiskers: p10–p90</text>`,
    '</svg>',
  );
  return parts.join('\n') + '\n';
}
