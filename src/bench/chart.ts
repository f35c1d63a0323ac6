/**
 * A scenario's chart: SVG bars, a group per parameter set, a bar per backend at its median, a
 * whisker from p10 to p90. A few hundred lines of string building instead of vega-lite plus a
 * renderer (~10 MB of dependencies) for charts this simple; the output is plain, diffable SVG.
 *
 * Three rules keep the charts honest and readable:
 * - a backend has the same colour in every chart (src/bench/palette.ts);
 * - one method per axis: rows that measure differently (`method=traffic` vs `method=test-run`, or
 *   another `metric`) get a panel each, with its own axis, never bars side by side on one;
 * - a backend measured in a panel but not at some parameters gets a "not measured" mark there
 *   instead of a silent gap; x labels that would overlap are turned.
 */
import { seriesColor } from './palette.js';
import type { BenchRow, BenchScenarioResult } from './results.js';

/** Parameters that change what a figure means: rows differing in one never share an axis. */
const AXIS_KEYS = ['method', 'metric'];
const WIDTH = 760;
const MARGIN = { top: 40, right: 150, left: 80 };
const PLOT_H = 220;
const PANEL_GAP = 26;
/** Width of one character of the 11 px sans-serif labels, about. */
const CHAR_W = 6.4;
const LINE_H = 12;
const TURN_DEG = 35;

type Params = BenchRow['params'];

function escape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

const pairs = (params: Params): string[] => Object.entries(params).map(([k, v]) => `${k}=${v}`);

/** `key=value` pairs every row has: they say nothing about a group and go in the title. */
function sharedPairs(rows: readonly BenchRow[]): Set<string> {
  const [first, ...rest] = rows.map((r) => new Set(pairs(r.params)));
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

/** 1, 2 or 5 times a power of ten, at least `raw`: round numbers on a linear axis. */
function niceStep(raw: number): number {
  const p = 10 ** Math.floor(Math.log10(raw));
  return ([1, 2, 5, 10].find((m) => m * p >= raw) ?? 10) * p;
}

interface Panel {
  /** `method=test-run`, or '' when the scenario has one method. */
  title: string;
  rows: BenchRow[];
}

/** One panel per value of the axis keys (in the order the rows first show them). */
export function chartPanels(s: BenchScenarioResult): Panel[] {
  const axisOf = (p: Params): string =>
    AXIS_KEYS.filter((k) => p[k] !== undefined)
      .map((k) => `${k}=${p[k]}`)
      .join(' ');
  const panels = new Map<string, BenchRow[]>();
  for (const r of s.rows) {
    const key = axisOf(r.params);
    panels.set(key, [...(panels.get(key) ?? []), r]);
  }
  return [...panels].map(([title, rows]) => ({ title: panels.size > 1 ? title : '', rows }));
}

/** Longest line of a turned label, in characters: longer labels wrap at spaces. */
const TURNED_LINE = 20;

/** `text` in lines of at most `width` characters, broken at spaces. */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  for (const word of text.split(' ')) {
    const last = lines[lines.length - 1];
    if (last !== undefined && last.length + 1 + word.length <= width)
      lines[lines.length - 1] = `${last} ${word}`;
    else lines.push(word);
  }
  return lines;
}

interface XLabels {
  turned: boolean;
  lines: (g: string) => string[];
  height: number;
}

/**
 * Group labels under the bars: stacked `key=value` lines when they fit the group's width, else
 * turned by TURN_DEG and wrapped, so neighbours never overlap.
 */
function xLabels(groups: string[], groupW: number): XLabels {
  const stacked = (g: string): string[] => g.split(' ');
  const widest = Math.max(0, ...groups.flatMap(stacked).map((l) => l.length)) * CHAR_W;
  if (widest <= groupW - 6) {
    const lines = Math.max(1, ...groups.map((g) => stacked(g).length));
    return { turned: false, lines: stacked, height: lines * LINE_H + 8 };
  }
  const turned = (g: string): string[] => wrap(g, TURNED_LINE);
  const longest = Math.max(0, ...groups.flatMap(turned).map((l) => l.length)) * CHAR_W;
  const depth = Math.max(1, ...groups.map((g) => turned(g).length)) * LINE_H;
  const rad = (TURN_DEG * Math.PI) / 180;
  return { turned: true, lines: turned, height: longest * Math.sin(rad) + depth * Math.cos(rad) + LINE_H };
}

interface Drawn {
  parts: string[];
  height: number;
  missing: boolean;
}

function drawPanel(s: BenchScenarioResult, panel: Panel, top: number, hidden: ReadonlySet<string>): Drawn {
  const label = (p: Params): string => {
    const own = pairs(p).filter((kv) => !hidden.has(kv) && !AXIS_KEYS.some((k) => kv.startsWith(`${k}=`)));
    return own.length ? own.join(' ') : 'all';
  };
  const groups = [...new Set(panel.rows.map((r) => label(r.params)))];
  const backends = [...new Set(panel.rows.map((r) => r.backend))];
  const values = panel.rows
    .flatMap((r) => [r.p10, r.median, r.p90])
    .filter((v) => Number.isFinite(v) && v > 0);
  const max = Math.max(...values, 1e-9);
  const min = Math.min(...values, max);
  // Medians that differ by orders of magnitude (10 vs 50k rules) would flatten on a linear axis.
  const log = max / min > 50;
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotTop = top + (panel.title ? 18 : 0);
  const base = plotTop + PLOT_H;
  const step = niceStep((max * 1.05) / 4);
  const lo = log ? Math.log10(min) - 0.1 : 0;
  const hi = log ? Math.log10(max) + 0.05 : Math.ceil((max * 1.05) / step) * step;
  const y = (v: number): number => {
    const t = log ? (Math.log10(Math.max(v, min)) - lo) / (hi - lo) : v / hi;
    return plotTop + PLOT_H * (1 - Math.min(1, Math.max(0, t)));
  };
  const groupW = plotW / Math.max(1, groups.length);
  const barW = Math.min(40, (groupW * 0.8) / Math.max(1, backends.length));
  const parts: string[] = [];
  if (panel.title) {
    const only = backends.length === 1 ? ` (${backends[0]} only)` : '';
    parts.push(
      `<text x="${MARGIN.left}" y="${top + 12}" font-weight="bold">${escape(panel.title)}${escape(only)}</text>`,
    );
  }
  const ticks = log
    ? Array.from({ length: Math.floor(hi) - Math.ceil(lo) + 1 }, (_, i) => 10 ** (Math.ceil(lo) + i))
    : Array.from({ length: Math.round(hi / step) + 1 }, (_, i) => step * i);
  for (const t of ticks) {
    const ty = y(t).toFixed(1);
    parts.push(
      `<line x1="${MARGIN.left}" x2="${MARGIN.left + plotW}" y1="${ty}" y2="${ty}" stroke="#ddd"/>`,
      `<text x="${MARGIN.left - 6}" y="${(Number(ty) + 4).toFixed(1)}" text-anchor="end">${niceNumber(t)}</text>`,
    );
  }
  parts.push(
    `<text transform="translate(18 ${plotTop + PLOT_H / 2}) rotate(-90)" text-anchor="middle">${escape(s.unit)}${log ? ' (log)' : ''}</text>`,
  );
  const labels = xLabels(groups, groupW);
  // A backend measured in most groups of the panel gets a mark where it was not; a series of one
  // group only (a baseline) is not "missing" from the others.
  const measuredIn = (b: string): number =>
    new Set(panel.rows.filter((r) => r.backend === b).map((r) => label(r.params))).size;
  const expected = (b: string): boolean => measuredIn(b) * 2 > groups.length;
  let missing = false;
  groups.forEach((g, gi) => {
    const gx = MARGIN.left + gi * groupW + (groupW - barW * backends.length) / 2;
    backends.forEach((b, bi) => {
      const row = panel.rows.find((r) => r.backend === b && label(r.params) === g);
      const x = gx + bi * barW;
      if (!row || !Number.isFinite(row.median)) {
        if (!expected(b)) return;
        // Measured elsewhere in this panel but not here: say so rather than leave a gap.
        missing = true;
        parts.push(
          `<text x="${(x + barW / 2 - 1).toFixed(1)}" y="${base - 4}" text-anchor="middle" fill="${seriesColor(b)}" font-size="15" font-weight="bold" data-not-measured="${escape(b)}">×<title>${escape(`${b} ${g}: not measured`)}</title></text>`,
        );
        return;
      }
      const barTop = y(row.median);
      parts.push(
        `<rect x="${x.toFixed(1)}" y="${barTop.toFixed(1)}" width="${(barW - 2).toFixed(1)}" height="${(base - barTop).toFixed(1)}" fill="${seriesColor(b)}" data-backend="${escape(b)}"><title>${escape(`${b} ${g}: median ${niceNumber(row.median)} ${s.unit} (p10 ${niceNumber(row.p10)}, p90 ${niceNumber(row.p90)}, n=${row.samples.length})`)}</title></rect>`,
        `<line x1="${(x + barW / 2 - 1).toFixed(1)}" x2="${(x + barW / 2 - 1).toFixed(1)}" y1="${y(row.p10).toFixed(1)}" y2="${y(row.p90).toFixed(1)}" stroke="#222"/>`,
      );
    });
    const cx = (MARGIN.left + gi * groupW + groupW / 2).toFixed(1);
    const ly = base + (labels.turned ? 12 : 16);
    const lines = labels
      .lines(g)
      .map((l, i) => `<tspan x="${cx}" dy="${i === 0 ? 0 : LINE_H}">${escape(l)}</tspan>`);
    const turn = labels.turned ? ` transform="rotate(-${TURN_DEG} ${cx} ${ly})"` : '';
    parts.push(
      `<text x="${cx}" y="${ly}" text-anchor="${labels.turned ? 'end' : 'middle'}"${turn} class="x-label">${lines.join('')}</text>`,
    );
  });
  parts.push(
    `<line x1="${MARGIN.left}" x2="${MARGIN.left + plotW}" y1="${base}" y2="${base}" stroke="#333"/>`,
  );
  return { parts, height: base - top + labels.height, missing };
}

export function scenarioSvg(s: BenchScenarioResult): string {
  const panels = chartPanels(s);
  // Shared by every row: in the title. Shared within a panel only: in the panel's title.
  const shared = sharedPairs(s.rows);
  const titleShared = [...shared].filter((kv) => !AXIS_KEYS.some((k) => kv.startsWith(`${k}=`)));
  const body: string[] = [];
  let top = MARGIN.top;
  let missing = false;
  for (const panel of panels) {
    const inPanel = sharedPairs(panel.rows);
    const drawn = drawPanel(s, { ...panel, title: panel.title }, top, panels.length > 1 ? inPanel : shared);
    body.push(...drawn.parts);
    missing ||= drawn.missing;
    top += drawn.height + PANEL_GAP;
  }
  const height = Math.ceil(top - PANEL_GAP + 28);
  const backends = [...new Set(s.rows.map((r) => r.backend))];
  const legend = backends.flatMap((b, bi) => {
    const ly = MARGIN.top + 10 + bi * 18;
    return [
      `<rect x="${WIDTH - MARGIN.right + 16}" y="${ly - 9}" width="12" height="12" fill="${seriesColor(b)}"/>`,
      `<text x="${WIDTH - MARGIN.right + 34}" y="${ly + 1}">${escape(b)}</text>`,
    ];
  });
  const footer = `bars: median; whiskers: p10–p90${missing ? '; ×: not measured at these parameters' : ''}${panels.length > 1 ? '; one panel per method, each with its own axis' : ''}`;
  return (
    [
      `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="sans-serif" font-size="11">`,
      `<rect width="100%" height="100%" fill="white"/>`,
      `<text x="${MARGIN.left}" y="22" font-size="14" font-weight="bold">${escape(s.name)}: ${escape(s.unit)} (${s.better} is better)${titleShared.length ? ` · ${escape(titleShared.join(' '))}` : ''}</text>`,
      ...body,
      ...legend,
      `<text x="${MARGIN.left}" y="${height - 10}" fill="#666">${escape(footer)}</text>`,
      '</svg>',
    ].join('\n') + '\n'
  );
}
