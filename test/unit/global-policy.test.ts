/**
 * GlobalPolicy and Prefilter (switchyard.dev/v1alpha1), as our kinds promise:
 *
 * - Global policies run before NetworkPolicies, in ascending `order` (ties by name); `selector`
 *   over endpoint labels (missing = every endpoint) and optional `namespaceSelector`.
 * - Rules in order; the first Allow or Deny decides; Pass hands the packet to the Kubernetes tier
 *   (skipping every remaining global rule); Log records and goes on. If no global rule decides,
 *   NetworkPolicy semantics decide.
 * - Peers: NetworkPolicy-like plus nets/notNets, every field ANDed; a bare podSelector matches pods in
 *   every namespace. Rules may restrict `protocol` (TCP/UDP/SCTP/ICMP) and `ports`.
 * - `types` defaults to Ingress when there are ingress rules or none at all, plus Egress with egress rules.
 * - Prefilter: source deny-list applied where the fabric enters a node, before anything else: pods on
 *   the destination's own node bypass it.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { explain, Oracle } from '../../src/calc/index.js';
import type { PolicyRef } from '../../src/ir/types.js';
import { validateManifestTexts, formatIssue } from '../../src/model/index.js';
import {
  Cluster,
  globalPolicy,
  lineContaining,
  namespace,
  networkPolicy,
  pod,
  prefilter,
  type Manifest,
  compileIR,
} from '../support/manifests.js';

const OUTSIDE = '198.18.255.200';
const OUTSIDE_OTHER = '198.18.255.10';

const IP = {
  'shop/web': '198.18.1.1',
  'shop/db': '198.18.1.2',
  'shop/client': '198.18.1.3',
  'other/client': '198.18.2.1',
  'other/db': '198.18.2.2',
} as const;

/**
 * shop (team=shop): web on node-a, db and client on node-b.
 * other (team=other): client on node-a, db on node-b.
 */
function cluster(policies: Manifest[] = [], file = 'cluster.yaml'): Cluster {
  return new Cluster(
    [
      namespace('shop', { team: 'shop' }),
      namespace('other', { team: 'other' }),
      pod('shop', 'web', { labels: { app: 'web' }, ip: IP['shop/web'], node: 'node-a' }),
      pod('shop', 'db', { labels: { app: 'db' }, ip: IP['shop/db'], node: 'node-b' }),
      pod('shop', 'client', { labels: { app: 'client' }, ip: IP['shop/client'], node: 'node-b' }),
      pod('other', 'client', { labels: { app: 'client' }, ip: IP['other/client'], node: 'node-a' }),
      pod('other', 'db', { labels: { app: 'db' }, ip: IP['other/db'], node: 'node-b' }),
      ...policies,
    ],
    {},
    file,
  );
}

const ALL = Object.keys(IP);

function gpRef(name: string): PolicyRef {
  return { kind: 'GlobalPolicy', name };
}

const defaultDeny = (ns: string): Manifest =>
  networkPolicy(ns, 'default-deny', { podSelector: {}, policyTypes: ['Ingress'] });

describe('tier order', () => {
  const allowClient = (name: string, order: number): Manifest =>
    globalPolicy(name, {
      order,
      selector: { matchLabels: { app: 'db' } },
      ingress: [{ action: 'Allow', from: [{ podSelector: { matchLabels: { app: 'client' } } }] }],
    });
  const denyAll = (name: string, order: number): Manifest =>
    globalPolicy(name, { order, selector: { matchLabels: { app: 'db' } }, ingress: [{ action: 'Deny' }] });

  it('lower order is evaluated first: an Allow at 10 beats a Deny at 20', () => {
    const c = cluster([denyAll('deny-db', 20), allowClient('allow-client', 10)]);
    const v = c.verdict('other/client', 'shop/db', 'TCP', 5432);
    expect(v.allowed).toBe(true);
    expect(v.ingress?.reason).toBe('global-rule');
    expect(v.ingress?.rule?.policy).toEqual(gpRef('allow-client'));
    expect(v.ingress?.ruleSet.globalPolicies).toEqual([gpRef('allow-client'), gpRef('deny-db')]);
    const w = c.verdict('shop/web', 'shop/db', 'TCP', 5432);
    expect(w.allowed).toBe(false);
    expect(w.ingress?.rule?.policy).toEqual(gpRef('deny-db'));
  });

  it('a Deny at 5 beats an Allow at 10', () => {
    const c = cluster([allowClient('allow-client', 10), denyAll('deny-db', 5)]);
    const v = c.verdict('other/client', 'shop/db', 'TCP', 5432);
    expect(v.allowed).toBe(false);
    expect(v.decidedAt).toBe('ingress');
    expect(v.ingress?.rule?.policy).toEqual(gpRef('deny-db'));
  });

  it('negative and fractional orders sort numerically', () => {
    const c = cluster([allowClient('allow-client', -1.5), denyAll('deny-db', -1)]);
    expect(c.allowed('other/client', 'shop/db', 'TCP', 5432)).toBe(true);
    const d = cluster([allowClient('allow-client', 100), denyAll('deny-db', 9)]);
    expect(d.allowed('other/client', 'shop/db', 'TCP', 5432)).toBe(false);
  });

  it('equal orders are broken by name, not by file order', () => {
    const a = cluster([denyAll('b-deny', 10), allowClient('a-allow', 10)]);
    expect(a.verdict('other/client', 'shop/db', 'TCP', 5432).ingress?.rule?.policy).toEqual(gpRef('a-allow'));
    const b = cluster([allowClient('b-allow', 10), denyAll('a-deny', 10)]);
    expect(b.verdict('other/client', 'shop/db', 'TCP', 5432).ingress?.rule?.policy).toEqual(gpRef('a-deny'));
  });

  it('rules within a policy apply in order: the first Allow or Deny that matches decides', () => {
    const c = cluster([
      globalPolicy('ordered', {
        order: 1,
        selector: { matchLabels: { app: 'db' } },
        ingress: [
          { action: 'Deny', from: [{ namespaceSelector: { matchLabels: { team: 'other' } } }] },
          { action: 'Allow', from: [{ podSelector: { matchLabels: { app: 'client' } } }] },
          { action: 'Deny' },
        ],
      }),
    ]);
    const fromOther = c.verdict('other/client', 'shop/db', 'TCP', 5432);
    expect(fromOther.allowed).toBe(false);
    expect(fromOther.ingress?.rule?.ruleIndex).toBe(0);
    const fromShop = c.verdict('shop/client', 'shop/db', 'TCP', 5432);
    expect(fromShop.allowed).toBe(true);
    expect(fromShop.ingress?.rule?.ruleIndex).toBe(1);
    const web = c.verdict('shop/web', 'shop/db', 'TCP', 5432);
    expect(web.allowed).toBe(false);
    expect(web.ingress?.rule?.ruleIndex).toBe(2);
  });

  it('a global Deny beats a NetworkPolicy allow', () => {
    const c = cluster([
      networkPolicy('shop', 'allow-all', { podSelector: {}, ingress: [{}] }),
      globalPolicy('no-other', {
        order: 1,
        ingress: [{ action: 'Deny', from: [{ namespaceSelector: { matchLabels: { team: 'other' } } }] }],
      }),
    ]);
    const v = c.verdict('other/client', 'shop/web', 'TCP', 80);
    expect(v.allowed).toBe(false);
    expect(v.ingress?.reason).toBe('global-rule');
    expect(v.ingress?.rule?.policy).toEqual(gpRef('no-other'));
    expect(c.verdict('shop/client', 'shop/web', 'TCP', 80).ingress?.reason).toBe('kubernetes-rule');
  });

  it('a global Allow beats a NetworkPolicy default deny', () => {
    const c = cluster([
      defaultDeny('shop'),
      globalPolicy('monitoring', {
        order: 1,
        ingress: [
          {
            action: 'Allow',
            from: [{ podSelector: { matchLabels: { app: 'client' } } }],
            ports: [{ port: 9100 }],
          },
        ],
      }),
    ]);
    const v = c.verdict('other/client', 'shop/web', 'TCP', 9100);
    expect(v.allowed).toBe(true);
    expect(v.ingress?.reason).toBe('global-rule');
    expect(c.allowed('other/client', 'shop/web', 'TCP', 80)).toBe(false);
    expect(c.verdict('shop/db', 'shop/web', 'TCP', 9100).ingress?.reason).toBe('kubernetes-default-deny');
  });
});

describe('Pass and Log', () => {
  const passShopThenDeny: Manifest[] = [
    globalPolicy('protect-db', {
      order: 20,
      selector: { matchLabels: { app: 'db' } },
      namespaceSelector: { matchLabels: { team: 'shop' } },
      ingress: [
        { action: 'Pass', from: [{ namespaceSelector: { matchLabels: { team: 'shop' } } }] },
        { action: 'Deny' },
      ],
    }),
    globalPolicy('zz-deny-later', { order: 30, ingress: [{ action: 'Deny' }] }),
  ];

  it('Pass hands over to the Kubernetes tier, skipping later global rules: allowed when no NetworkPolicy isolates', () => {
    const c = cluster(passShopThenDeny);
    const v = c.verdict('shop/web', 'shop/db', 'TCP', 5432);
    expect(v.allowed).toBe(true);
    expect(v.ingress?.reason).toBe('no-policy');
    expect(v.ingress?.passedBy?.policy).toEqual(gpRef('protect-db'));
    expect(v.ingress?.passedBy?.ruleIndex).toBe(0);
    const other = c.verdict('other/client', 'shop/db', 'TCP', 5432);
    expect(other.allowed).toBe(false);
    expect(other.ingress?.rule?.policy).toEqual(gpRef('protect-db'));
    expect(other.ingress?.rule?.ruleIndex).toBe(1);
    // Endpoints protect-db does not select meet zz-deny-later.
    expect(c.verdict('shop/web', 'shop/client', 'TCP', 80).ingress?.rule?.policy).toEqual(
      gpRef('zz-deny-later'),
    );
  });

  it('Pass hands over to the Kubernetes tier: denied when a NetworkPolicy isolates and none allows', () => {
    const c = cluster([
      ...passShopThenDeny,
      networkPolicy('shop', 'db-from-web', {
        podSelector: { matchLabels: { app: 'db' } },
        ingress: [{ from: [{ podSelector: { matchLabels: { app: 'web' } } }] }],
      }),
    ]);
    const denied = c.verdict('shop/client', 'shop/db', 'TCP', 5432);
    expect(denied.allowed).toBe(false);
    expect(denied.ingress?.reason).toBe('kubernetes-default-deny');
    expect(denied.ingress?.passedBy?.policy).toEqual(gpRef('protect-db'));
    const allowed = c.verdict('shop/web', 'shop/db', 'TCP', 5432);
    expect(allowed.allowed).toBe(true);
    expect(allowed.ingress?.reason).toBe('kubernetes-rule');
    expect(allowed.ingress?.rule?.policy).toEqual({
      kind: 'NetworkPolicy',
      namespace: 'shop',
      name: 'db-from-web',
    });
    expect(allowed.ingress?.passedBy?.ruleIndex).toBe(0);
  });

  it('Log records every matching log rule and does not decide', () => {
    const c = cluster([
      globalPolicy('audit-1', { order: 1, ingress: [{ action: 'Log' }] }),
      globalPolicy('audit-2', {
        order: 2,
        ingress: [{ action: 'Log', from: [{ namespaceSelector: { matchLabels: { team: 'other' } } }] }],
      }),
      defaultDeny('other'),
    ]);
    const open = c.verdict('other/client', 'shop/web', 'TCP', 80);
    expect(open.allowed).toBe(true);
    expect(open.ingress?.reason).toBe('no-policy');
    expect(open.ingress?.logged.map((r) => r.policy)).toEqual([gpRef('audit-1'), gpRef('audit-2')]);
    const closed = c.verdict('shop/web', 'other/db', 'TCP', 80);
    expect(closed.allowed).toBe(false);
    expect(closed.ingress?.reason).toBe('kubernetes-default-deny');
    expect(closed.ingress?.logged.map((r) => r.policy)).toEqual([gpRef('audit-1')]);
  });

  it('Log rules after the deciding rule are not reached', () => {
    const c = cluster([
      globalPolicy('allow-first', { order: 1, ingress: [{ action: 'Allow' }] }),
      globalPolicy('audit-late', { order: 2, ingress: [{ action: 'Log' }] }),
    ]);
    const v = c.verdict('other/client', 'shop/web', 'TCP', 80);
    expect(v.ingress?.rule?.policy).toEqual(gpRef('allow-first'));
    expect(v.ingress?.logged).toEqual([]);
  });

  it('Log before a Pass is recorded, and the Pass still hands over', () => {
    const c = cluster([
      globalPolicy('g', { order: 1, ingress: [{ action: 'Log' }, { action: 'Pass' }, { action: 'Deny' }] }),
      defaultDeny('shop'),
    ]);
    const v = c.verdict('other/client', 'shop/web', 'TCP', 80);
    expect(v.ingress?.logged.map((r) => r.ruleIndex)).toEqual([0]);
    expect(v.ingress?.passedBy?.ruleIndex).toBe(1);
    expect(v.ingress?.reason).toBe('kubernetes-default-deny');
    expect(c.verdict('shop/web', 'other/db', 'TCP', 80).ingress?.reason).toBe('no-policy');
  });
});

describe('selection', () => {
  it('a missing selector selects every endpoint in every namespace', () => {
    const c = cluster([globalPolicy('deny-all', { order: 1, ingress: [{ action: 'Deny' }] })]);
    for (const to of ALL) {
      const v = c.verdict(OUTSIDE, to, 'TCP', 80);
      expect(v.allowed, to).toBe(false);
      expect(v.ingress?.rule?.policy).toEqual(gpRef('deny-all'));
    }
  });

  it('selector and namespaceSelector are ANDed', () => {
    const c = cluster([
      globalPolicy('shop-db', {
        order: 1,
        selector: { matchLabels: { app: 'db' } },
        namespaceSelector: { matchLabels: { team: 'shop' } },
        ingress: [{ action: 'Deny' }],
      }),
    ]);
    expect(ALL.filter((to) => !c.allowed(OUTSIDE, to, 'TCP', 80))).toEqual(['shop/db']);
  });

  it('a namespaceSelector alone selects every pod of the matching namespaces', () => {
    const c = cluster([
      globalPolicy('other-ns', {
        order: 1,
        namespaceSelector: { matchExpressions: [{ key: 'team', operator: 'In', values: ['other'] }] },
        ingress: [{ action: 'Deny' }],
      }),
    ]);
    expect(ALL.filter((to) => !c.allowed(OUTSIDE, to, 'TCP', 80))).toEqual(['other/client', 'other/db']);
  });

  it('types default: Ingress with ingress rules or none, Egress only with egress rules', () => {
    const c = cluster([
      globalPolicy('egress-only', { order: 1, egress: [{ action: 'Log' }] }),
      globalPolicy('no-rules', { order: 2 }),
      globalPolicy('both', { order: 3, ingress: [{ action: 'Log' }], egress: [{ action: 'Log' }] }),
      globalPolicy('typed-egress', { order: 4, types: ['Egress'], ingress: [{ action: 'Deny' }] }),
    ]);
    const oracle = new Oracle(c.ir);
    expect(oracle.ruleSet('shop/web', 'ingress').globalPolicies).toEqual([gpRef('no-rules'), gpRef('both')]);
    expect(oracle.ruleSet('shop/web', 'egress').globalPolicies).toEqual([
      gpRef('egress-only'),
      gpRef('both'),
      gpRef('typed-egress'),
    ]);
    // typed-egress's ingress Deny never applies.
    expect(c.allowed('other/client', 'shop/web', 'TCP', 80)).toBe(true);
    expect(c.model.globalPolicies.find((g) => g.name === 'no-rules')?.types).toEqual(['Ingress']);
  });
});

describe('peers', () => {
  it('a bare podSelector matches pods in every namespace', () => {
    const c = cluster([
      globalPolicy('clients-out', {
        order: 1,
        selector: { matchLabels: { app: 'web' } },
        ingress: [{ action: 'Deny', from: [{ podSelector: { matchLabels: { app: 'client' } } }] }],
      }),
    ]);
    expect(ALL.filter((from) => from !== 'shop/web' && !c.allowed(from, 'shop/web', 'TCP', 80))).toEqual([
      'shop/client',
      'other/client',
    ]);
  });

  it('nets matches addresses in the listed CIDRs', () => {
    const c = cluster([
      globalPolicy('no-lab-hosts', {
        order: 1,
        ingress: [{ action: 'Deny', from: [{ nets: ['198.18.255.128/25'] }] }],
      }),
    ]);
    expect(c.allowed(OUTSIDE, 'shop/web', 'TCP', 80)).toBe(false);
    expect(c.allowed(OUTSIDE_OTHER, 'shop/web', 'TCP', 80)).toBe(true);
    expect(c.allowed('other/client', 'shop/web', 'TCP', 80)).toBe(true);
  });

  it('notNets alone matches every address outside the listed CIDRs', () => {
    const c = cluster([
      globalPolicy('shop-only', {
        order: 1,
        selector: { matchLabels: { app: 'web' } },
        ingress: [{ action: 'Deny', from: [{ notNets: ['198.18.1.0/24'] }] }],
      }),
    ]);
    expect(c.allowed('shop/client', 'shop/web', 'TCP', 80)).toBe(true);
    expect(c.allowed('other/client', 'shop/web', 'TCP', 80)).toBe(false);
    expect(c.allowed(OUTSIDE, 'shop/web', 'TCP', 80)).toBe(false);
  });

  it('every field of one peer is ANDed: selectors, nets and notNets', () => {
    const c = cluster([
      globalPolicy('and', {
        order: 1,
        selector: { matchLabels: { app: 'web' } },
        ingress: [
          {
            action: 'Deny',
            from: [
              { podSelector: { matchLabels: { app: 'client' } }, nets: ['198.18.2.0/24'] },
              { namespaceSelector: { matchLabels: { team: 'shop' } }, notNets: [`${IP['shop/client']}/32`] },
            ],
          },
        ],
      }),
    ]);
    expect(c.allowed('other/client', 'shop/web', 'TCP', 80)).toBe(false); // client AND in 198.18.2.0/24
    expect(c.allowed('other/db', 'shop/web', 'TCP', 80)).toBe(true); // in the net, not a client
    expect(c.allowed('shop/client', 'shop/web', 'TCP', 80)).toBe(true); // a client outside the net; notNets
    expect(c.allowed('shop/db', 'shop/web', 'TCP', 80)).toBe(false); // shop AND not shop/client
  });

  it('ipBlock with except works in global peers too', () => {
    const c = cluster([
      globalPolicy('ext', {
        order: 1,
        ingress: [
          { action: 'Deny', from: [{ ipBlock: { cidr: '198.18.255.0/24', except: ['198.18.255.0/28'] } }] },
        ],
      }),
    ]);
    expect(c.allowed(OUTSIDE, 'shop/web', 'TCP', 80)).toBe(false);
    expect(c.allowed(OUTSIDE_OTHER, 'shop/web', 'TCP', 80)).toBe(true);
  });
});

describe('protocols and ports', () => {
  it('protocol restricts a rule to that protocol', () => {
    const c = cluster([globalPolicy('no-udp', { order: 1, ingress: [{ action: 'Deny', protocol: 'UDP' }] })]);
    expect(c.allowed('other/client', 'shop/web', 'UDP', 53)).toBe(false);
    expect(c.allowed('other/client', 'shop/web', 'TCP', 53)).toBe(true);
    expect(c.allowed('other/client', 'shop/web', 'SCTP', 53)).toBe(true);
  });

  it('ports with a rule protocol restrict to those ports of that protocol', () => {
    const c = cluster([
      globalPolicy('no-db-port', {
        order: 1,
        ingress: [{ action: 'Deny', protocol: 'UDP', ports: [{ port: 5000, endPort: 5002 }] }],
      }),
    ]);
    expect(c.allowed('other/client', 'shop/db', 'UDP', 5000)).toBe(false);
    expect(c.allowed('other/client', 'shop/db', 'UDP', 5002)).toBe(false);
    expect(c.allowed('other/client', 'shop/db', 'UDP', 5003)).toBe(true);
    expect(c.allowed('other/client', 'shop/db', 'TCP', 5000)).toBe(true);
  });

  it('ports without a protocol default to TCP', () => {
    const c = cluster([
      globalPolicy('no-5432', { order: 1, ingress: [{ action: 'Deny', ports: [{ port: 5432 }] }] }),
    ]);
    expect(c.allowed('other/client', 'shop/db', 'TCP', 5432)).toBe(false);
    expect(c.allowed('other/client', 'shop/db', 'UDP', 5432)).toBe(true);
    expect(c.allowed('other/client', 'shop/db', 'TCP', 5433)).toBe(true);
  });

  it('ICMP rules match ICMP (no port) and nothing else', () => {
    const c = cluster([
      defaultDeny('shop'),
      globalPolicy('ping', { order: 1, ingress: [{ action: 'Allow', protocol: 'ICMP' }] }),
      globalPolicy('no-ping-other', {
        order: 2,
        namespaceSelector: { matchLabels: { team: 'other' } },
        ingress: [{ action: 'Deny', protocol: 'ICMP' }],
      }),
    ]);
    const ping = c.verdict('other/client', 'shop/web', 'ICMP');
    expect(ping.allowed).toBe(true);
    expect(ping.ingress?.rule?.policy).toEqual(gpRef('ping'));
    expect(c.allowed('other/client', 'shop/web', 'TCP', 80)).toBe(false);
    expect(c.allowed(OUTSIDE, 'shop/db', 'ICMP')).toBe(true);
    // ping (order 1) decides before no-ping-other (order 2).
    expect(c.verdict('shop/web', 'other/db', 'ICMP').ingress?.rule?.policy).toEqual(gpRef('ping'));
    const d = cluster([
      globalPolicy('no-ping', { order: 1, ingress: [{ action: 'Deny', protocol: 'ICMP' }] }),
    ]);
    expect(d.allowed('shop/web', 'other/db', 'ICMP')).toBe(false);
    expect(d.allowed('shop/web', 'other/db', 'TCP', 80)).toBe(true);
  });

  it('a NetworkPolicy rule without ports matches ICMP too (every protocol)', () => {
    const c = cluster([
      defaultDeny('shop'),
      networkPolicy('shop', 'all-in', { podSelector: {}, ingress: [{}] }),
    ]);
    expect(c.verdict('other/client', 'shop/web', 'ICMP').ingress?.reason).toBe('kubernetes-rule');
  });

  it('a named port in a global rule resolves on each destination pod', () => {
    const c = new Cluster([
      namespace('svc'),
      pod('svc', 'one', { ip: '198.18.50.1', ports: [{ name: 'http', containerPort: 8080 }] }),
      pod('svc', 'two', { ip: '198.18.50.2', ports: [{ name: 'http', containerPort: 9090 }] }),
      defaultDeny('svc'),
      globalPolicy('http', { order: 1, ingress: [{ action: 'Allow', ports: [{ port: 'http' }] }] }),
    ]);
    expect(c.allowed(OUTSIDE, 'svc/one', 'TCP', 8080)).toBe(true);
    expect(c.allowed(OUTSIDE, 'svc/one', 'TCP', 9090)).toBe(false);
    expect(c.allowed(OUTSIDE, 'svc/two', 'TCP', 9090)).toBe(true);
    expect(c.allowed(OUTSIDE, 'svc/two', 'TCP', 8080)).toBe(false);
  });

  it('a NetworkPolicy rule with ports never matches ICMP', () => {
    const c = cluster([
      networkPolicy('shop', 'web-80', {
        podSelector: { matchLabels: { app: 'web' } },
        ingress: [{ ports: [{ port: 80 }] }],
      }),
    ]);
    expect(c.allowed('other/client', 'shop/web', 'TCP', 80)).toBe(true);
    expect(c.allowed('other/client', 'shop/web', 'ICMP')).toBe(false);
  });
});

describe('egress', () => {
  it('a global egress Deny to an outside address stops it at the source', () => {
    const c = cluster([
      globalPolicy('no-exfil', {
        order: 1,
        egress: [{ action: 'Deny', to: [{ nets: [`${OUTSIDE}/32`] }] }],
      }),
    ]);
    const v = c.verdict('shop/web', OUTSIDE, 'TCP', 443);
    expect(v.allowed).toBe(false);
    expect(v.decidedAt).toBe('egress');
    expect(v.egress?.rule?.policy).toEqual(gpRef('no-exfil'));
    expect(c.allowed('shop/web', OUTSIDE_OTHER, 'TCP', 443)).toBe(true);
    // Ingress from that address is not affected by an egress-only policy.
    expect(c.allowed(OUTSIDE, 'shop/web', 'TCP', 80)).toBe(true);
  });

  it('a global egress Allow overrides a NetworkPolicy egress default deny', () => {
    const c = cluster([
      networkPolicy('shop', 'no-egress', { podSelector: {}, policyTypes: ['Egress'] }),
      globalPolicy('dns', {
        order: 1,
        egress: [{ action: 'Allow', protocol: 'UDP', ports: [{ port: 53 }] }],
      }),
    ]);
    expect(c.allowed('shop/web', OUTSIDE, 'UDP', 53)).toBe(true);
    expect(c.allowed('shop/web', OUTSIDE, 'TCP', 53)).toBe(false);
  });
});

describe('explain', () => {
  const FILE = 'policies/global.yaml';
  const text = `# cluster
apiVersion: v1
kind: Namespace
metadata: { name: shop, labels: { team: shop } }
---
apiVersion: v1
kind: Pod
metadata: { name: web, namespace: shop, labels: { app: web } }
status: { podIP: 198.18.1.1 }
---
apiVersion: v1
kind: Pod
metadata: { name: db, namespace: shop, labels: { app: db } }
status: { podIP: 198.18.1.2 }
---
# audit first
apiVersion: switchyard.dev/v1alpha1
kind: GlobalPolicy
metadata:
  name: audit
spec:
  order: 1
  ingress:
    - action: Log
---
apiVersion: switchyard.dev/v1alpha1
kind: GlobalPolicy
metadata:
  name: guard-db
spec:
  order: 5
  selector: { matchLabels: { app: db } }
  ingress:
    - action: Allow
      from: [{ podSelector: { matchLabels: { app: web } } }]
      ports: [{ port: 5432 }]
    - action: Deny
`;
  const { model, issues } = validateManifestTexts([{ file: FILE, text }]);
  if (!model) throw new Error(issues.map(formatIssue).join('\n'));
  const ir = compileIR(model);
  const guardLine = lineContaining(text, 'apiVersion: switchyard.dev/v1alpha1', 2);
  const auditLine = lineContaining(text, 'apiVersion: switchyard.dev/v1alpha1', 1);

  it('names the deciding GlobalPolicy, its rule index and its manifest file:line', () => {
    const e = explain(model, ir, { from: OUTSIDE, to: 'shop/db', protocol: 'TCP', port: 5432 });
    expect(e.allowed).toBe(false);
    expect(e.decidedAt).toBe('ingress');
    expect(e.ingress?.reason).toBe('global-rule');
    expect(e.ingress?.rule).toMatchObject({
      policy: 'GlobalPolicy guard-db',
      ruleIndex: 1,
      action: 'deny',
      source: `${FILE}:${guardLine}`,
    });
    expect(e.ingress?.globalPolicies).toEqual(['GlobalPolicy audit', 'GlobalPolicy guard-db']);
    expect(e.ingress?.logged).toEqual([
      expect.objectContaining({ policy: 'GlobalPolicy audit', ruleIndex: 0, source: `${FILE}:${auditLine}` }),
    ]);
    expect(e.ingress?.text).toMatch(/GlobalPolicy guard-db ingress rule 1/);

    const ok = explain(model, ir, { from: 'shop/web', to: 'shop/db', protocol: 'TCP', port: 5432 });
    expect(ok.allowed).toBe(true);
    expect(ok.ingress?.rule).toMatchObject({
      policy: 'GlobalPolicy guard-db',
      ruleIndex: 0,
      action: 'allow',
    });
  });
});

describe('Prefilter', () => {
  const blocked = [IP['other/client'], IP['shop/client'], OUTSIDE];

  it('drops listed sources entering another node, before any policy', () => {
    const c = cluster([
      prefilter('blocklist', { cidrs: blocked.map((a) => `${a}/32`) }),
      globalPolicy('allow-everything', { order: -1000, ingress: [{ action: 'Allow' }] }),
    ]);
    // other/client is on node-a, shop/db on node-b: across the fabric.
    const v = c.verdict('other/client', 'shop/db', 'TCP', 5432);
    expect(v.allowed).toBe(false);
    expect(v.decidedAt).toBe('prefilter');
    expect(v.prefilter).toBe('blocklist');
    expect(v.ingress).toBeUndefined();
    expect(c.verdict(OUTSIDE, 'shop/db', 'TCP', 5432).decidedAt).toBe('prefilter');
    expect(c.verdict(OUTSIDE, 'shop/web', 'TCP', 80).decidedAt).toBe('prefilter');
    // shop/client is on node-b, like shop/db: it never crosses the fabric.
    expect(c.verdict('shop/client', 'shop/db', 'TCP', 5432).allowed).toBe(true);
    // ...but it does cross it to reach shop/web on node-a.
    expect(c.verdict('shop/client', 'shop/web', 'TCP', 80).decidedAt).toBe('prefilter');
    // Unlisted sources are not affected, nor a listed destination on the client's own node.
    expect(c.allowed(OUTSIDE_OTHER, 'shop/db', 'TCP', 5432)).toBe(true);
    expect(c.allowed('shop/web', 'other/client', 'TCP', 80)).toBe(true);
    // A listed destination across the fabric: the request leaves, but its replies are listed
    // sources entering shop/web's node, and the stateless prefilter drops them.
    const reply = c.verdict('shop/web', OUTSIDE, 'TCP', 80);
    expect(reply.allowed).toBe(false);
    expect(reply.decidedAt).toBe('prefilter');
    expect(reply.prefilterReply).toBe(true);
    // A listed pod leaving the cluster never enters a node from the fabric.
    expect(c.allowed('other/client', OUTSIDE_OTHER, 'TCP', 443)).toBe(true);
  });

  it('with nodes, is installed on those nodes only', () => {
    const c = cluster([prefilter('node-b-only', { nodes: ['node-b'], cidrs: [`${OUTSIDE}/32`] })]);
    expect(c.verdict(OUTSIDE, 'shop/db', 'TCP', 5432).prefilter).toBe('node-b-only');
    expect(c.allowed(OUTSIDE, 'shop/web', 'TCP', 80)).toBe(true);
    expect(c.ir.prefilters).toEqual([expect.objectContaining({ name: 'node-b-only', nodes: ['node-b'] })]);
  });

  it('matches whole CIDRs, not only single addresses', () => {
    const c = cluster([prefilter('range', { cidrs: ['198.18.255.192/26'] })]);
    expect(c.allowed(OUTSIDE, 'shop/db', 'TCP', 5432)).toBe(false);
    expect(c.allowed('198.18.255.191', 'shop/db', 'TCP', 5432)).toBe(true);
  });

  it('is explained as the deciding stage', () => {
    const c = cluster([prefilter('blocklist', { cidrs: [`${OUTSIDE}/32`] })]);
    const e = explain(c.model, c.ir, { from: OUTSIDE, to: 'shop/db', protocol: 'TCP', port: 5432 });
    expect(e.allowed).toBe(false);
    expect(e.decidedAt).toBe('prefilter');
    expect(e.prefilter).toBe('blocklist');
    expect(e.summary).toMatch(/Prefilter blocklist/);
  });

  describe('with a list file', () => {
    let dir: string;
    beforeAll(() => {
      dir = mkdtempSync(join(tmpdir(), 'sy-gp-'));
      writeFileSync(join(dir, 'list.txt'), `# bad hosts\n${OUTSIDE}   # one address\n\n198.18.255.0/30\n`);
    });
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    it('drops addresses and CIDRs read from the file next to the manifest', () => {
      const c = cluster([prefilter('from-file', { file: 'list.txt' })], join(dir, 'cluster.yaml'));
      expect(c.verdict(OUTSIDE, 'shop/db', 'TCP', 5432).prefilter).toBe('from-file');
      expect(c.verdict('198.18.255.3', 'shop/db', 'TCP', 5432).prefilter).toBe('from-file');
      expect(c.allowed('198.18.255.4', 'shop/db', 'TCP', 5432)).toBe(true);
      expect(c.allowed(OUTSIDE_OTHER, 'shop/db', 'TCP', 5432)).toBe(true);
    });
  });
});
