/**
 * The bench charts (`bench --svg`, the console): one colour per backend in every chart, one method
 * per axis with "not measured" marks instead of silent gaps, and x labels that do not overlap.
 * Drawn from recorded results (docs/benchmarks/results.json).
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { chartPanels } from '../../src/bench/chart.js';
import { BACKEND_COLORS, seriesColor } from '../../src/bench/palette.js';
import { scenarioSvg, type BenchReport, type BenchScenarioResult } from '../../src/bench/results.js';

const REPORT = JSON.parse(
  readFileSync(new URL('../../docs/benchmarks/results.json', import.meta.url), 'utf8'),
) as BenchReport;
const scenario = (name: string): BenchScenarioResult => {
  const s = REPORT.scenarios.find((x) => x.name === name);
  if (!s) throw new Error(`no scenario ${name} in results.json`);
  return s;
};

/** Every bar's backend and fill, and every legend swatch's, of one chart. */
function colours(svg: string): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  const add = (b: string, c: string): void => void out.set(b, (out.get(b) ?? new Set()).add(c));
  for (const m of svg.matchAll(/fill="(#[0-9a-f]{6})" data-backend="([^"]+)"/g))
    add(m[2] as string, m[1] as string);
  for (const m of svg.matchAll(/fill="(#[0-9a-f]{6})"\/>\n<text [^>]*>([^<]+)<\/text>/g))
    add(m[2] as string, m[1] as string);
  return out;
}

/** The x labels of a chart: position, lines, and whether they are turned. */
function labels(svg: string): { x: number; y: number; lines: string[]; turned: boolean }[] {
  return [
    ...svg.matchAll(
      /<text x="([\d.]+)" y="([\d.]+)" text-anchor="\w+"( transform="[^"]+")? class="x-label">(.*?)<\/text>/g,
    ),
  ].map((m) => ({
    x: Number(m[1]),
    y: Number(m[2]),
    turned: m[3] !== undefined,
    lines: [...(m[4] ?? '').matchAll(/<tspan[^>]*>([^<]*)<\/tspan>/g)].map((t) => t[1] as string),
  }));
}

describe('bench charts', () => {
  it('give each backend one colour in every chart (the palette module)', () => {
    const seen = new Map<string, Set<string>>();
    for (const s of REPORT.scenarios)
      for (const [b, cs] of colours(scenarioSvg(s)))
        for (const c of cs) seen.set(b, (seen.get(b) ?? new Set()).add(c));
    for (const b of ['ebpf', 'iptables', 'nftables', 'none']) {
      expect([...(seen.get(b) ?? [])], b).toEqual([BACKEND_COLORS[b]]);
    }
    expect(new Set(Object.values(BACKEND_COLORS)).size).toBe(Object.keys(BACKEND_COLORS).length);
    expect(seriesColor('lpm-trie')).toBe(seriesColor('lpm-trie'));
  });

  it('never puts two methods on one axis: policy and prefilter get a panel per method', () => {
    for (const name of ['policy', 'prefilter']) {
      const panels = chartPanels(scenario(name));
      expect(panels.map((p) => p.title)).toEqual(['method=traffic', 'method=test-run']);
      for (const p of panels) expect(new Set(p.rows.map((r) => r.params.method)).size).toBe(1);
      const svg = scenarioSvg(scenario(name));
      expect(svg).toContain('method=test-run (ebpf only)');
    }
    expect(chartPanels(scenario('services'))).toHaveLength(1);
  });

  it('marks a backend not measured at some parameters instead of leaving a silent gap', () => {
    // eBPF's walk does not load at 1000 and 10000 varied rules: the traffic panel says so.
    const svg = scenarioSvg(scenario('policy'));
    const marks = [...svg.matchAll(/data-not-measured="([^"]+)">×<title>([^<]+)<\/title>/g)].map((m) => m[2]);
    expect(marks).toEqual([
      'ebpf rules=1000 mode=walk: not measured',
      'ebpf rules=10000 mode=walk: not measured',
    ]);
    expect(svg).toContain('×: not measured at these parameters');
    expect(scenarioSvg(scenario('services'))).not.toContain('data-not-measured');
  });

  it('turns and wraps x labels that would overlap, and keeps the others side by side', () => {
    for (const s of REPORT.scenarios) {
      const ls = labels(scenarioSvg(s));
      expect(ls.length, s.name).toBeGreaterThan(0);
      for (const l of ls) {
        const spacing = Math.min(...ls.filter((o) => o !== l && o.y === l.y).map((o) => Math.abs(o.x - l.x)));
        const widest = Math.max(...l.lines.map((x) => x.length)) * 6.4;
        // Upright: a label's widest line fits between its neighbours. Turned: short lines.
        if (l.turned) expect(widest, `${s.name}: ${l.lines.join(' / ')}`).toBeLessThanOrEqual(20 * 6.4);
        else expect(widest, `${s.name}: ${l.lines.join(' / ')}`).toBeLessThan(spacing);
      }
    }
    expect(
      labels(scenarioSvg(scenario('policy')))
        .slice(0, 8)
        .every((l) => l.turned),
    ).toBe(true);
  });
});
