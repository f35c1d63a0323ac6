/**
 * Who may use a browser-facing listener on loopback (the console, an agent's `--listen` port):
 * requests naming a loopback address or the bound one in the Host header (a page of another site
 * whose name was rebound to 127.0.0.1 names its own host: refused, so DNS rebinding gets nothing),
 * carrying the token as `Authorization: Bearer`, the HttpOnly cookie a first page load sets, or
 * `?token=` (the link the CLI prints; EventSource cannot set headers).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type http from 'node:http';

/** The session cookie's name: the same for the console and agents (each is its own origin). */
export const COOKIE = 'switchyard_console';

export function generateToken(): string {
  return randomBytes(24).toString('base64url');
}

/** Constant-time comparison (of digests, so unequal lengths leak nothing either). */
export function sameToken(given: string, token: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(token).digest();
  return timingSafeEqual(a, b);
}

export function cookieValue(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0 && part.slice(0, i).trim() === name) return decodeURIComponent(part.slice(i + 1).trim());
  }
  return undefined;
}

export type TokenSource = 'header' | 'cookie' | 'query';

/**
 * How the request proved it holds the token, or undefined when it did not. A bearer header that
 * is wrong fails outright: a client that sends one means it.
 */
export function authenticate(req: http.IncomingMessage, url: URL, token: string): TokenSource | undefined {
  const bearer = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '')?.[1];
  if (bearer !== undefined) return sameToken(bearer, token) ? 'header' : undefined;
  const cookie = cookieValue(req.headers.cookie, COOKIE);
  if (cookie !== undefined && sameToken(cookie, token)) return 'cookie';
  const query = url.searchParams.get('token');
  if (query !== null && sameToken(query, token)) return 'query';
  return undefined;
}

export function sessionCookie(token: string): string {
  return `${COOKIE}=${encodeURIComponent(token)}; HttpOnly; SameSite=Strict; Path=/`;
}

/**
 * Trades a `?token=` in the address bar for the HttpOnly session cookie (EventSource and <img>
 * send it): a 303 to the same page without the token.
 */
export function redirectWithSessionCookie(res: http.ServerResponse, url: URL, token: string): void {
  const clean = new URL(url);
  clean.searchParams.delete('token');
  res.writeHead(303, { 'set-cookie': sessionCookie(token), location: `${clean.pathname}${clean.search}` });
  res.end();
}

/** Where a listener is bound: `host` as given to listen() (`::1`, not `[::1]`). */
export interface BoundAddress {
  host: string;
  port: number;
}

const LOOPBACK_NAME = /^(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|localhost|\[::1\]|::1)$/i;

/** 127.x.x.x, localhost or ::1 (bracketed or not): names that cannot leave the host. */
export function isLoopbackName(name: string): boolean {
  return LOOPBACK_NAME.test(name);
}

/**
 * Whether a Host header names this listener: a loopback name or address, or the bound address,
 * with the bound port (no port: 80).
 */
export function allowedHost(host: string | undefined, bound: BoundAddress): boolean {
  const m = /^(\[[^\]]*\]|[^:]*)(?::(\d+))?$/.exec(host ?? '');
  if (!m) return false;
  const name = (m[1] as string).toLowerCase();
  const port = m[2] === undefined ? 80 : Number(m[2]);
  if (port !== bound.port) return false;
  const boundName = (bound.host.includes(':') ? `[${bound.host}]` : bound.host).toLowerCase();
  return isLoopbackName(name) || name === boundName;
}

/** Why a request is refused, as the status and message to answer with. */
export interface Refusal {
  status: 401 | 403;
  message: string;
}

/**
 * The gate of a browser-facing listener: the Host check, then the token. Returns how the token
 * came, or the refusal to answer with (`who` names the listener in it, `unauthorized` tells a
 * client without the token where to find it).
 */
export function checkAccess(
  req: http.IncomingMessage,
  url: URL,
  opts: { token: string; bound: BoundAddress; who: string; unauthorized: string },
): TokenSource | Refusal {
  if (!allowedHost(req.headers.host, opts.bound))
    return { status: 403, message: `${opts.who} answers only to ${hostNames(opts.bound)}` };
  return authenticate(req, url, opts.token) ?? { status: 401, message: opts.unauthorized };
}

function hostNames(bound: BoundAddress): string {
  const own = bound.host.includes(':') ? `[${bound.host}]` : bound.host;
  return own === '127.0.0.1' || own === 'localhost' ? '127.0.0.1/localhost' : `${own}, 127.0.0.1/localhost`;
}
