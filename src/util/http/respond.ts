/** Answering HTTP requests with JSON, errors and server-sent event streams. */
import type http from 'node:http';
import { errorMessage } from '../errors.js';

/** An error a handler throws to answer with `status` (anything else answers 500). */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'HttpError';
  }
}

export function sendJson(
  res: http.ServerResponse,
  value: unknown,
  headers: Record<string, string> = {},
): void {
  res.writeHead(200, { ...headers, 'content-type': 'application/json' });
  res.end(JSON.stringify(value));
}

/** Answers `{ error }` with `status`; after a stream began, only ends it. */
export function sendError(
  res: http.ServerResponse,
  status: number,
  message: string,
  headers: Record<string, string> = {},
): void {
  if (!res.headersSent) res.writeHead(status, { ...headers, 'content-type': 'application/json' });
  res.end(JSON.stringify({ error: message }));
}

/** Answers with what a handler threw: its HttpError status, or 500. */
export function sendFailure(
  res: http.ServerResponse,
  e: unknown,
  headers: Record<string, string> = {},
): void {
  sendError(res, e instanceof HttpError ? e.status : 500, errorMessage(e), headers);
}

/** Starts a server-sent event stream; `comment` is its first line (proxies see bytes at once). */
export function openEventStream(
  res: http.ServerResponse,
  comment: string,
  headers: Record<string, string> = {},
): void {
  res.writeHead(200, {
    ...headers,
    'content-type': 'text/event-stream',
    'cache-control': 'no-cache',
    connection: 'keep-alive',
  });
  res.write(`: ${comment}\n\n`);
}

export function sendEvent(res: http.ServerResponse, event: string, data: unknown): void {
  if (!res.writableEnded) res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
}
