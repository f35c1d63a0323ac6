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

/** `198.18.0.2:80`, `[fd00:5957::2]:80`: IPv6 is bracketed before a port, as the CLI prints it. */
export function withPort(address: string, port: number | string): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

/** 6 for an IPv6 address, else undefined (IPv4 is explain's default). */
export function familyOf(address: string): 6 | undefined {
  return address.includes(':') ? 6 : undefined;
}

export function href(page: string, params: Record<string, string | number | undefined> = {}): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== '') q.set(k, String(v));
  const s = q.toString();
  return `#/${page}${s ? `?${s}` : ''}`;
}
