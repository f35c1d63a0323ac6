/**
 * IP protocol numbers (IANA, as in <netinet/in.h>) of the protocols policies can name, and the
 * mapping between those numbers and the names the model uses. The one home of these numbers:
 * BPF programs, flow events and hand-built frames all import them from here.
 */

export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_SCTP = 132;

/** Name → number, e.g. `IPPROTO.TCP === 6`. */
export const IPPROTO = {
  ICMP: IPPROTO_ICMP,
  TCP: IPPROTO_TCP,
  UDP: IPPROTO_UDP,
  SCTP: IPPROTO_SCTP,
} as const;

export type ProtocolName = keyof typeof IPPROTO;

export const PROTOCOL_NUMBERS: Readonly<Record<ProtocolName, number>> = IPPROTO;

/** Number → name; undefined for a protocol policies cannot name. */
export const PROTOCOL_NAMES: Readonly<Record<number, ProtocolName>> = Object.fromEntries(
  Object.entries(IPPROTO).map(([name, number]) => [number, name]),
) as Record<number, ProtocolName>;

/** The protocol's name, or its number as text when it has none here (`47` for GRE). */
export function protocolName(number: number): string {
  return PROTOCOL_NAMES[number] ?? String(number);
}
