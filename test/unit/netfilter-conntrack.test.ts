/**
 * Kernel conntrack lines (`conntrack -L -o extended`) become backend-neutral entries.
 */
import { describe, expect, it } from 'vitest';
import { parseConntrackEntry } from '../../src/dataplane/netfilter/conntrack.js';

describe('kernel conntrack entries', () => {
  it('keep protocol, addresses, state, expiry, reply and both directions of accounting', () => {
    const line =
      'ipv4     2 tcp      6 431999 ESTABLISHED src=198.18.0.2 dst=198.18.0.3 sport=40000 dport=80 packets=3 bytes=180 ' +
      'src=198.18.0.3 dst=198.18.0.2 sport=80 dport=40000 packets=2 bytes=120 [ASSURED] mark=0 use=1';
    expect(parseConntrackEntry(line)).toEqual({
      protocol: 'TCP',
      src: '198.18.0.2',
      sport: 40000,
      dst: '198.18.0.3',
      dport: 80,
      state: 'ESTABLISHED',
      replied: true,
      expiresInSeconds: 431999,
      packets: 5,
      bytes: 300,
    });
  });

  it('mark unreplied UDP entries, which have no state', () => {
    const line =
      'ipv4     2 udp      17 29 src=198.18.0.2 dst=198.18.0.3 sport=5000 dport=53 [UNREPLIED] src=198.18.0.3 dst=198.18.0.2 sport=53 dport=5000 mark=0 use=1';
    expect(parseConntrackEntry(line)).toMatchObject({
      protocol: 'UDP',
      state: '-',
      replied: false,
      expiresInSeconds: 29,
    });
    expect(
      parseConntrackEntry('conntrack v1.4.7 (conntrack-tools): 1 flow entries have been shown.'),
    ).toBeUndefined();
  });
});
