/**
 * One line of `conntrack -L -o extended` (or of `conntrack -E`) as plain fields: how the
 * netfilter backends read their kernel's connection table for `lab conntrack` and `node conntrack`.
 */

export interface ParsedConntrackLine {
  type: 'NEW' | 'DESTROY' | 'UPDATE' | undefined;
  /** Seconds since the epoch with fraction, from `-o timestamp`. */
  timestamp?: number;
  protocol: number;
  src: string;
  dst: string;
  sport: number;
  dport: number;
  /** Per direction: [original, reply]; undefined without accounting. */
  packets?: [number, number];
  bytes?: [number, number];
}

/**
 * One line of `conntrack -E -o timestamp,extended` or `conntrack -L -o extended`:
 *
 *   [1795616902.340164]	[DESTROY] ipv4     2 tcp      6 119 TIME_WAIT src=… dst=… sport=… dport=…
 *       packets=4 bytes=216 src=… dst=… sport=… dport=… packets=4 bytes=221 [ASSURED] …
 *
 * The first src/dst/ports/packets/bytes belong to the original direction, the second to the reply.
 */
export function parseConntrackLine(line: string): ParsedConntrackLine | undefined {
  const m =
    /^\s*(?:\[(\d+(?:\.\d+)?)\]\s*)?(?:\[(NEW|DESTROY|UPDATE)\]\s*)?(ipv4|ipv6)\s+\d+\s+(\S+)\s+(\d+)\s/.exec(
      line,
    );
  if (!m) return undefined;
  const seen = new Map<string, string[]>();
  for (const kv of line.matchAll(/\b(src|dst|sport|dport|packets|bytes)=(\S+)/g)) {
    const list = seen.get(kv[1] as string) ?? [];
    list.push(kv[2] as string);
    seen.set(kv[1] as string, list);
  }
  const first = (k: string): string | undefined => seen.get(k)?.[0];
  const pair = (k: string): [number, number] | undefined => {
    const v = seen.get(k);
    return v && v.length >= 2 ? [Number(v[0]), Number(v[1])] : undefined;
  };
  const src = first('src');
  const dst = first('dst');
  if (src === undefined || dst === undefined) return undefined;
  const packets = pair('packets');
  const bytes = pair('bytes');
  return {
    type: m[2] as ParsedConntrackLine['type'],
    ...(m[1] !== undefined ? { timestamp: Number(m[1]) } : {}),
    protocol: Number(m[5]),
    src,
    dst,
    sport: Number(first('sport') ?? 0),
    dport: Number(first('dport') ?? 0),
    ...(packets ? { packets } : {}),
    ...(bytes ? { bytes } : {}),
  };
}
