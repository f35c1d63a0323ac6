import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  FlowFilterError,
  flowMatcher,
  parseDuration,
  parseFlowQuery,
  parseLabelSelector,
  parseSince,
  parseVerdict,
  type FlowFilterFlags,
} from '../../src/observe/flow-filter.js';
import type { Flow } from '../../src/observe/flows.js';
import { flowPeer, sampleFlow } from '../support/flows.js';

const NOW = Date.parse('2026-12-05T05:00:00Z');

const peer = flowPeer;
const WEB = peer('shop/web-7f9', { app: 'web', tier: 'front' });
const flow = sampleFlow;

const matches = (flags: FlowFilterFlags, f: Flow = flow()): boolean =>
  flowMatcher(parseFlowQuery(flags, NOW))(f);

describe('flow filters (hubble observe vocabulary)', () => {
  it('--pod matches either end, including the peer a node only knows by address', () => {
    // Recorded by shop/db's node: the client is the source, not the endpoint, and no process.
    expect(matches({ pod: ['outside/client'], verdict: ['deny'] })).toBe(true);
    expect(matches({ pod: ['shop/db'] })).toBe(true);
    expect(matches({ pod: ['shop/web'] })).toBe(false);
    // A prefix, as Hubble's --pod.
    expect(matches({ pod: ['shop/web'] }, flow({ destination: WEB }))).toBe(true);
  });

  it('--from-pod and --to-pod hold for one end; bare names take -n (default: default)', () => {
    expect(matches({ fromPod: ['outside/client'] })).toBe(true);
    expect(matches({ toPod: ['outside/client'] })).toBe(false);
    expect(matches({ fromPod: ['client'], namespace: ['outside'] })).toBe(true);
    expect(matches({ fromPod: ['client'] })).toBe(false);
    expect(matches({ toPod: ['db'], namespace: ['shop'], fromPod: ['outside/client'] })).toBe(true);
  });

  it('records from an agent without resolved ends still match by their endpoint', () => {
    const bare = flow({ source: undefined, destination: undefined });
    expect(matches({ toPod: ['shop/db'] }, bare)).toBe(true);
    expect(matches({ fromPod: ['outside/client'] }, bare)).toBe(false);
  });

  it('--namespace and --label hold for either end; --from-label/--to-label for one', () => {
    expect(matches({ namespace: ['outside'] })).toBe(true);
    expect(matches({ namespace: ['kube-system'] })).toBe(false);
    expect(matches({ label: ['app=db'] })).toBe(true);
    expect(matches({ label: ['k8s:app=client'] })).toBe(true);
    expect(matches({ fromLabel: ['app=db'] })).toBe(false);
    expect(matches({ toLabel: ['tier in (data,cache),app!=web'] })).toBe(true);
    expect(matches({ toLabel: ['!tier'] })).toBe(false);
    // Repeated: OR.
    expect(matches({ fromLabel: ['app=web', 'app=client'] })).toBe(true);
  });

  it('addresses outside the cluster have no pod, namespace or labels', () => {
    const outside = flow({ src: '198.19.128.5', source: undefined });
    expect(matches({ fromPod: ['outside/client'] }, outside)).toBe(false);
    expect(matches({ fromLabel: ['!app'] }, outside)).toBe(false);
    expect(matches({ fromIp: ['198.19.128.0/17'] }, outside)).toBe(true);
  });

  it('--ip (address or CIDR), --protocol, --port, --verdict in any case', () => {
    expect(matches({ ip: ['198.18.0.4'] })).toBe(true);
    expect(matches({ fromIp: ['198.18.0.4'] })).toBe(false);
    expect(matches({ toIp: ['198.18.0.0/29'] })).toBe(true);
    expect(matches({ ip: ['fd00:5957::/32'] })).toBe(false);
    expect(matches({ protocol: ['tcp'] })).toBe(true);
    expect(matches({ protocol: ['UDP'] })).toBe(false);
    expect(matches({ port: ['5432'] })).toBe(true);
    expect(matches({ toPort: ['80', '5432'] })).toBe(true);
    expect(matches({ fromPort: ['5432'] })).toBe(false);
    for (const v of ['DENY', 'deny', 'Dropped', 'DROPPED', 'denied'])
      expect(matches({ verdict: [v] })).toBe(true);
    expect(matches({ verdict: ['FORWARDED', 'AUDIT'] })).toBe(false);
    // A policy denial is not one of the kernel's own drops.
    expect(matches({ verdict: ['kernel'] })).toBe(false);
    expect(parseFlowQuery({ verdict: ['kernel'] }, NOW).verdicts).toEqual(['dropped']);
    expect(parseFlowQuery({ verdict: ['DROPPED'] }, NOW).verdicts).toEqual(['deny', 'dropped']);
  });

  it('--ip, --from-ip, --to-ip take IPv6 addresses and CIDRs, in any spelling, each family apart', () => {
    const v6 = flow({
      src: 'fd00:5957::2',
      dst: 'fd00:5957:0:1::4',
      source: undefined,
      destination: undefined,
    });
    expect(matches({ ip: ['fd00:5957::/32'] }, v6)).toBe(true);
    expect(matches({ fromIp: ['FD00:5957:0:0::2'] }, v6)).toBe(true);
    expect(matches({ toIp: ['fd00:5957::2'] }, v6)).toBe(false);
    expect(matches({ toIp: ['fd00:5957:0:1::/64'] }, v6)).toBe(true);
    expect(matches({ fromIp: ['fd00:5957:0:1::/64'] }, v6)).toBe(false);
    // An IPv4 CIDR never holds an IPv6 address, and the other way round.
    expect(matches({ ip: ['0.0.0.0/0'] }, v6)).toBe(false);
    expect(matches({ ip: ['::/0'] })).toBe(false);
    expect(matches({ ip: ['::/0', '198.18.0.4'] })).toBe(true);
    expect(() => parseFlowQuery({ toIp: ['fd00:5957::/129'] }, NOW)).toThrow(/--to-ip/);
    expect(() => parseFlowQuery({ fromIp: ['fd00:::1'] }, NOW)).toThrow(/--from-ip/);
  });

  it('filters AND, repeated values OR', () => {
    expect(matches({ verdict: ['allow', 'deny'], pod: ['outside/client'], protocol: ['tcp'] })).toBe(true);
    expect(matches({ verdict: ['allow'], pod: ['outside/client'] })).toBe(false);
    expect(matches({ pod: ['outside/client'], namespace: ['shop'] })).toBe(true);
    expect(matches({ fromPod: ['outside/client'], toLabel: ['app=web'] })).toBe(false);
  });

  it('--since: a duration before now or an RFC 3339 time', () => {
    expect(matches({ since: '5m' })).toBe(true);
    expect(matches({ since: '30s' })).toBe(false);
    expect(matches({ since: '2026-12-05T04:58:30Z' })).toBe(true);
    expect(matches({ since: '2026-12-05T06:00:00+01:00' })).toBe(false);
    expect(parseDuration('1h30m')).toBe(5_400_000);
    expect(parseSince('90s', NOW)).toBe('2026-12-05T04:58:30.000Z');
  });

  it('refuses what it cannot read, naming the flag', () => {
    expect(() => parseVerdict('maybe')).toThrow(/--verdict .*not 'maybe'/);
    expect(() => parseFlowQuery({ protocol: ['icmp6'] }, NOW)).toThrow(/--protocol/);
    expect(() => parseFlowQuery({ toPort: ['70000'] }, NOW)).toThrow(/--to-port/);
    expect(() => parseFlowQuery({ ip: ['10.0.0.300'] }, NOW)).toThrow(/--ip/);
    expect(() => parseFlowQuery({ since: 'yesterday' }, NOW)).toThrow(/--since/);
    expect(() => parseFlowQuery({ fromPod: ['a/b/c'] }, NOW)).toThrow(/--from-pod/);
    expect(() => parseFlowQuery({ label: ['app=,'] }, NOW)).toThrow(FlowFilterError);
    expect(() => parseFlowQuery({ label: ['app in ()'] }, NOW)).toThrow(/--label/);
  });

  it('an empty query matches everything', () => {
    expect(parseFlowQuery({}, NOW)).toEqual({});
    expect(matches({})).toBe(true);
  });

  it('label selectors mean what the Kubernetes selector means (property)', () => {
    const key = fc.constantFrom('app', 'tier', 'team');
    const value = fc.constantFrom('a', 'b', 'c');
    const labels = fc.dictionary(key, value);
    fc.assert(
      fc.property(labels, key, fc.array(value, { minLength: 1, maxLength: 3 }), (l, k, vs) => {
        const has = Object.prototype.hasOwnProperty.call(l, k);
        const sel = (text: string): boolean =>
          flowMatcher({ to: { labels: [parseLabelSelector(text)] } })(
            flow({ destination: peer('shop/db', l) }),
          );
        expect(sel(`${k}=${vs[0]}`)).toBe(l[k] === vs[0]);
        expect(sel(`${k}!=${vs[0]}`)).toBe(l[k] !== vs[0]);
        expect(sel(`${k} in (${vs.join(',')})`)).toBe(has && (vs as string[]).includes(l[k] as string));
        expect(sel(`${k} notin (${vs.join(',')})`)).toBe(!has || !(vs as string[]).includes(l[k] as string));
        expect(sel(k)).toBe(has);
        expect(sel(`!${k}`)).toBe(!has);
      }),
    );
  });

  it('an either-end filter is the OR of its from- and to- forms (property)', () => {
    const pods = fc.constantFrom('outside/client', 'shop/db', 'shop/web-7f9', 'other/x');
    fc.assert(
      fc.property(pods, (p) => {
        const f = flow({ destination: WEB });
        expect(matches({ pod: [p] }, f)).toBe(matches({ fromPod: [p] }, f) || matches({ toPod: [p] }, f));
      }),
    );
  });
});
