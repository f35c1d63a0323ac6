/** The access checks of the browser-facing listeners (console, agent --listen): Host, then token. */
import type http from 'node:http';
import { describe, expect, it } from 'vitest';
import {
  allowedHost,
  authenticate,
  checkAccess,
  cookieValue,
  generateToken,
  sameToken,
  sessionCookie,
} from '../../src/util/http/auth.js';

const TOKEN = 'token-0123456789abcdef';

function request(headers: http.IncomingHttpHeaders): http.IncomingMessage {
  return { headers } as http.IncomingMessage;
}

describe('allowedHost', () => {
  const bound = { host: '127.0.0.1', port: 8080 };

  it('accepts loopback names and addresses with the bound port', () => {
    for (const host of ['127.0.0.1:8080', 'localhost:8080', 'LOCALHOST:8080', '[::1]:8080', '127.9.8.7:8080'])
      expect(allowedHost(host, bound), host).toBe(true);
  });

  it('refuses other names, other ports and no Host at all', () => {
    for (const host of [
      'evil.example:8080',
      'localhost.evil.example:8080',
      '127.0.0.1.evil.example:8080',
      '10.0.0.1:8080',
      '127.0.0.1:8081',
      '127.0.0.1',
      '[::2]:8080',
      '',
      undefined,
    ])
      expect(allowedHost(host, bound), String(host)).toBe(false);
  });

  it('takes a missing port as 80', () => {
    expect(allowedHost('localhost', { host: '127.0.0.1', port: 80 })).toBe(true);
  });

  it('accepts the bound address', () => {
    expect(allowedHost('[::1]:9000', { host: '::1', port: 9000 })).toBe(true);
    expect(allowedHost('127.0.0.5:9000', { host: '127.0.0.5', port: 9000 })).toBe(true);
  });
});

describe('tokens', () => {
  it('compares tokens exactly, whatever their lengths', () => {
    expect(sameToken(TOKEN, TOKEN)).toBe(true);
    expect(sameToken(`${TOKEN}x`, TOKEN)).toBe(false);
    expect(sameToken('', TOKEN)).toBe(false);
    expect(generateToken()).not.toBe(generateToken());
    expect(generateToken().length).toBeGreaterThanOrEqual(32);
  });

  it('reads cookies by name', () => {
    expect(cookieValue('a=1; switchyard_console=x%20y; b=2', 'switchyard_console')).toBe('x y');
    expect(cookieValue('a=1', 'switchyard_console')).toBeUndefined();
    expect(cookieValue(undefined, 'switchyard_console')).toBeUndefined();
  });

  it('says how the token came: header, cookie or query', () => {
    const url = (q = ''): URL => new URL(`/x${q}`, 'http://h');
    expect(authenticate(request({ authorization: `Bearer ${TOKEN}` }), url(), TOKEN)).toBe('header');
    const cookie = sessionCookie(TOKEN).split(';')[0] as string;
    expect(authenticate(request({ cookie }), url(), TOKEN)).toBe('cookie');
    expect(authenticate(request({}), url(`?token=${TOKEN}`), TOKEN)).toBe('query');
    expect(authenticate(request({}), url(), TOKEN)).toBeUndefined();
    expect(authenticate(request({}), url('?token=nope'), TOKEN)).toBeUndefined();
  });

  it('does not fall back from a wrong bearer header to the query', () => {
    const req = request({ authorization: 'Bearer wrong' });
    expect(authenticate(req, new URL(`/x?token=${TOKEN}`, 'http://h'), TOKEN)).toBeUndefined();
  });
});

describe('checkAccess', () => {
  const opts = {
    token: TOKEN,
    bound: { host: '127.0.0.1', port: 8080 },
    who: 'the test',
    unauthorized: 'no',
  };
  const url = new URL('/v1/status', 'http://h');

  it('refuses a foreign Host with 403 before looking at the token', () => {
    const refusal = checkAccess(
      request({ host: 'evil.example:8080', authorization: `Bearer ${TOKEN}` }),
      url,
      opts,
    );
    expect(refusal).toEqual({ status: 403, message: 'the test answers only to 127.0.0.1/localhost' });
  });

  it('refuses a loopback Host without the token with 401', () => {
    expect(checkAccess(request({ host: '127.0.0.1:8080' }), url, opts)).toEqual({
      status: 401,
      message: 'no',
    });
  });

  it('lets a loopback Host with the token in', () => {
    expect(
      checkAccess(request({ host: 'localhost:8080', authorization: `Bearer ${TOKEN}` }), url, opts),
    ).toBe('header');
  });
});
