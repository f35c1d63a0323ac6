/**
 * One colour per backend, everywhere a backend is drawn: the bench charts (`bench --svg`, the
 * console) and the console's pages (which get this map from /api/bench, as web/ imports types
 * only). A name not listed here (a scenario's own series, such as `lpm-trie` or `routed`) gets a
 * colour from its name, so it too keeps its colour from chart to chart.
 */

/** Observable 10's first hues, fixed per backend; `none` (no dataplane, the baseline) is grey. */
export const BACKEND_COLORS: Readonly<Record<string, string>> = {
  ebpf: '#4269d0',
  iptables: '#efb118',
  nftables: '#3ca951',
  none: '#9498a0',
};

const OTHER_COLORS = ['#ff725c', '#6cc5b0', '#a463f2', '#ff8ab7', '#97bbf5', '#9c6b4e', '#2f8f9d'];

/** The colour of a backend or series name: fixed for backends, derived from the name otherwise. */
export function seriesColor(name: string): string {
  const fixed = BACKEND_COLORS[name];
  if (fixed) return fixed;
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return OTHER_COLORS[h % OTHER_COLORS.length] as string;
}

/** Colours for a list of names, for clients that cannot import this module (the browser). */
export function paletteFor(names: Iterable<string>): Record<string, string> {
  return Object.fromEntries([...new Set(names)].map((n) => [n, seriesColor(n)]));
}
