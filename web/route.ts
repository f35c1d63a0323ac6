/** Hash routes: `#/page?param=value`. */
export interface Route {
  page: string;
  params: URLSearchParams;
}

export function parseHash(): Route {
  const hash = location.hash.replace(/^#\/?/, '');
  const [page = '', search = ''] = hash.split('?');
  return { page: page || 'endpoints', params: new URLSearchParams(search) };
}

export function href(page: string, params: Record<string, string | number | undefined> = {}): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== '') q.set(k, String(v));
  const s = q.toString();
  return `#/${page}${s ? `?${s}` : ''}`;
}
