/**
 * The netfilter backends' flow-log encodings read back: every prefix a backend renders for an IR
 * decodes to the verdict, rule and direction that produced it, through the map and through the
 * fallback decoder alike; and kernel conntrack lines become backend-neutral entries.
 */
import { describe, expect, it } from 'vitest';
import { parseConntrackEntry } from '../../src/dataplane/netfilter/conntrack.js';
import { prefixMap } from '../../src/dataplane/netfilter/flow-source.js';
import { nftablesNflogCodec } from '../../src/dataplane/nftables/flow-log.js';
import { compileIR, globalPolicy, modelOf, namespace, networkPolicy, pod } from '../support/manifests.js';

const IR_ = compileIR(
  modelOf([
    namespace('shop'),
    pod('shop', 'web', { labels: { app: 'web' }, ip: '198.18.1.1', node: 'node-1' }),
    pod('shop', 'db', { labels: { app: 'db' }, ip: '198.18.1.2', node: 'node-1' }),
    networkPolicy('shop', 'db-allow-web', {
      podSelector: { matchLabels: { app: 'db' } },
      ingress: [{ from: [{ podSelector: { matchLabels: { app: 'web' } } }], ports: [{ port: 5432 }] }],
    }),
    globalPolicy('audit', {
      order: 1,
      ingress: [{ action: 'Log' }, { action: 'Deny', from: [{ nets: ['198.19.200.0/24'] }] }],
    }),
  ]),
);

// iptables aggregates flows in ipsets (iptables/flow-counters.ts): no NFLOG prefixes to read.
const codecs = { nftables: nftablesNflogCodec };

describe.each(Object.entries(codecs))('%s NFLOG prefixes', (_name, codec) => {
  const map = prefixMap(IR_, codec);

  it('name every rule, the defaults and Log rules', () => {
    const rules = new Set([...map.values()].map((e) => e.rule));
    expect(rules).toContain('np:shop/db-allow-web/ingress/0');
    expect(rules).toContain('shop/db/ingress/default');
    expect([...map.values()].some((e) => e.verdict === 'log')).toBe(true);
    expect([...map.values()].some((e) => e.verdict === 'deny')).toBe(true);
  });

  it('decode without the IR to what the map says (short ids)', () => {
    for (const [prefix, entry] of map) {
      if (entry.rule.length > 40) continue;
      expect(codec.decode(prefix)).toEqual(entry);
    }
  });
});

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
