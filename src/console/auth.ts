/**
 * Who may use the console: requests to a loopback address, naming it in the Host header (no DNS
 * rebinding), carrying the token as `Authorization: Bearer`, the HttpOnly cookie the first page
 * load sets, or `?token=` (the link `switchyard console` prints).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type http from 'node:http';

export const COOKIE = 'switchyard_console';

export function generateToken(): string {
  return randomBytes(24).toString('base64url');
}

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

/** How the request proved it holds the token, or undefined when it did not. */
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

/** A Host header naming a loopback address (and our port): anything else is a rebinding attempt. */
export function loopbackHost(host: string | undefined, port: number): boolean {
  const m = /^(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|localhost|\[::1\])(?::(\d+))?$/i.exec(host ?? '');
  return m !== null && (m[2] === undefined ? port === 80 : Number(m[2]) === port);
}
