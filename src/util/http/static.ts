/**
 * The browser console's pages: one shell page for every route of the single-page app and the
 * bundle `npm run build` makes (esbuild, web/ → dist/console/static/), served from disk with a
 * strict Content-Security-Policy; nothing is fetched from elsewhere. Both `switchyard console`
 * and an agent's `--listen` port serve them (the page's `mode` tells it which API to use).
 */
import { existsSync, readFileSync } from 'node:fs';
import type http from 'node:http';
import { fileURLToPath } from 'node:url';

const ASSETS: Record<string, string> = {
  'app.js': 'text/javascript; charset=utf-8',
  'app.css': 'text/css; charset=utf-8',
};

export const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
  "base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

export type WebAppMode = 'console' | 'agent';

/** dist/console/static, from the compiled module (dist/util/http) or from the sources (src/util/http). */
export function staticDir(): string | undefined {
  const candidates = [
    new URL('../../console/static/', import.meta.url),
    new URL('../../../dist/console/static/', import.meta.url),
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

/** The page every route of the single-page app loads. */
export function shellHtml(mode: WebAppMode, title: string): string {
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

export function isShellPath(pathname: string): boolean {
  return pathname === '/' || pathname === '/index.html';
}

/** The shell or a file of the bundle. */
export function isWebAppPath(pathname: string): boolean {
  return isShellPath(pathname) || ASSETS[pathname.slice(1)] !== undefined;
}

/**
 * Answers GET `/` (the shell) and the bundle's files; false for any other path. Callers check
 * the token first.
 */
export function serveWebApp(
  pathname: string,
  res: http.ServerResponse,
  opts: { mode: WebAppMode; title: string },
): boolean {
  if (isShellPath(pathname)) {
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
