/**
 * The console's browser bundle: built by `npm run build` (esbuild, web/ → dist/console/static/),
 * served from disk with a strict Content-Security-Policy; nothing is fetched from elsewhere.
 */
import { existsSync, readFileSync } from 'node:fs';
import type http from 'node:http';
import { fileURLToPath } from 'node:url';
import { sessionCookie } from './auth.js';

const ASSETS: Record<string, string> = {
  'app.js': 'text/javascript; charset=utf-8',
  'app.css': 'text/css; charset=utf-8',
};

export const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
  "base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/** dist/console/static, from the compiled module (dist/console) or from the sources (src/console). */
export function staticDir(): string | undefined {
  const candidates = [
    new URL('./static/', import.meta.url),
    new URL('../../dist/console/static/', import.meta.url),
  ];
  return candidates.map((u) => fileURLToPath(u)).find((dir) => existsSync(`${dir}app.js`));
}

export function securityHeaders(extra: Record<string, string> = {}): Record<string, string> {
  return {
    'content-security-policy': CSP,
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
    'x-frame-options': 'DENY',
    'cache-control': 'no-store',
    ...extra,
  };
}

/** The page every route of the single-page app loads; `mode` tells it which API to use. */
export function shellHtml(mode: 'console' | 'agent', title: string): string {
  const esc = title.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="switchyard-mode" content="${mode}">
<title>${esc}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/app.css">
<script type="module" src="/app.js"></script>
</head>
<body><div id="app"></div></body>
</html>
`;
}

/**
 * Answers GET `/` (the shell) and the bundle's files; false for any other path. Callers check
 * the token first.
 */
export function serveConsoleAsset(
  pathname: string,
  res: http.ServerResponse,
  opts: { mode: 'console' | 'agent'; title: string },
): boolean {
  if (pathname === '/' || pathname === '/index.html') {
    res.writeHead(200, securityHeaders({ 'content-type': 'text/html; charset=utf-8' }));
    res.end(shellHtml(opts.mode, opts.title));
    return true;
  }
  const name = pathname.slice(1);
  const type = ASSETS[name];
  if (!type) return false;
  const dir = staticDir();
  if (!dir) {
    res.writeHead(503, { 'content-type': 'text/plain' });
    res.end("the console's bundle is not built: run `npm run build`\n");
    return true;
  }
  res.writeHead(200, securityHeaders({ 'content-type': type }));
  res.end(readFileSync(`${dir}${name}`));
  return true;
}

/**
 * The agent's TCP listener (`switchyard agent --listen`) serves the same pages for its own node
 * (endpoints, flows, explain). Called after the agent checked the token: a `?token=` on a page is
 * traded for the session cookie (so EventSource works), then the shell and bundle are served.
 * False for anything else (the API).
 */
export function serveAgentConsole(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  token: string,
  node: string,
): boolean {
  if (req.method !== 'GET') return false;
  const url = new URL(req.url ?? '/', 'http://agent');
  const page = url.pathname === '/' || url.pathname === '/index.html';
  if (!page && !ASSETS[url.pathname.slice(1)]) return false;
  if (page && url.searchParams.has('token')) {
    url.searchParams.delete('token');
    res.writeHead(303, { 'set-cookie': sessionCookie(token), location: `${url.pathname}${url.search}` });
    res.end();
    return true;
  }
  return serveConsoleAsset(url.pathname, res, { mode: 'agent', title: `Switchyard · ${node}` });
}
