/** RuleCatalog: rule ids (IR ids and the synthetic ones of counters and flows) → policy and action. */
import { describe, expect, it } from 'vitest';
import type { IR } from '../../src/ir/types.js';
import { RuleCatalog } from '../../src/observe/rules.js';
import { globalPolicy, modelOf, namespace, networkPolicy, pod, compileIR } from '../support/manifests.js';

/**
 * shop/web (node-1) and shop/db (node-2); db takes ingress from web on 5432 only (default deny);
 * a global policy denies 203.0.113.0/24 into every pod and logs egress to 198.51.100.0/24.
 */
function ir(): IR {
  return compileIR(
    modelOf([
      namespace('shop'),
      pod('shop', 'web', { labels: { app: 'web' }, ip: '198.18.1.1', node: 'node-1' }),
      pod('shop', 'db', { labels: { app: 'db' }, ip: '198.18.1.2', node: 'node-2' }),
      networkPolicy('shop', 'db-allow-web', {
        podSelector: { matchLabels: { app: 'db' } },
        policyTypes: ['Ingress'],
        ingress: [{ from: [{ podSelector: { matchLabels: { app: 'web' } } }], ports: [{ port: 5432 }] }],
      }),
      globalPolicy('deny-bad', {
        order: 10,
        ingress: [{ action: 'Deny', from: [{ nets: ['203.0.113.0/24'] }] }],
        egress: [{ action: 'Log', to: [{ nets: ['198.51.100.0/24'] }] }],
      }),
    ]),
  );
}

describe('RuleCatalog', () => {
  const built = ir();
  const catalog = new RuleCatalog(built);
  const ruleIds = built.ruleSets.flatMap((rs) => [...rs.globalRules, ...rs.kubernetesRules].map((r) => r.id));

  it('the test IR has the rules the cases below rely on', () => {
    expect(ruleIds).toContain('np:shop/db-allow-web/ingress/0');
    expect(ruleIds).toContain('gp:deny-bad/ingress/0');
    expect(ruleIds).toContain('gp:deny-bad/egress/0');
    const rs = (endpoint: string, direction: string) =>
      built.ruleSets.find((r) => r.endpoint === endpoint && r.direction === direction);
    expect(rs('shop/db', 'ingress')?.kubernetesDefault).toBe('deny');
    expect(rs('shop/web', 'ingress')?.kubernetesDefault).toBe('allow');
  });

  it('policyOf names the policy of every IR rule', () => {
    expect(catalog.policyOf('np:shop/db-allow-web/ingress/0')).toBe('NetworkPolicy shop/db-allow-web');
    expect(catalog.policyOf('gp:deny-bad/ingress/0')).toBe('GlobalPolicy deny-bad');
    expect(catalog.policyOf('gp:deny-bad/egress/0')).toBe('GlobalPolicy deny-bad');
    for (const id of ruleIds) expect(catalog.policyOf(id), id).toMatch(/^(NetworkPolicy|GlobalPolicy) /);
  });

  it('policyOf is undefined for defaults, fail-closed drops, prefilters and unknown ids', () => {
    expect(catalog.policyOf('shop/db/ingress/default')).toBeUndefined();
    expect(catalog.policyOf('shop/db/ingress/fail-closed/missing-set')).toBeUndefined();
    expect(catalog.policyOf('prefilter/blocklist')).toBeUndefined();
    expect(catalog.policyOf('np:shop/nope/ingress/0')).toBeUndefined();
  });

  const described = (id: string, kind: string, policy: string, action: string): void =>
    expect(catalog.describe(id), id).toEqual({ kind, policy, action });

  it('describe gives policy and action of IR rules', () => {
    described('np:shop/db-allow-web/ingress/0', 'NetworkPolicy', 'shop/db-allow-web', 'allow');
    described('gp:deny-bad/ingress/0', 'GlobalPolicy', 'deny-bad', 'deny');
    described('gp:deny-bad/egress/0', 'GlobalPolicy', 'deny-bad', 'log');
  });

  it("describes `<endpoint>/<direction>/default` with the rule set's kubernetesDefault", () => {
    described('shop/db/ingress/default', 'default', '', 'deny');
    described('shop/web/ingress/default', 'default', '', 'allow');
    described('shop/db/egress/default', 'default', '', 'allow');
    // An endpoint the IR does not know: fail closed.
    described('shop/gone/ingress/default', 'default', '', 'deny');
  });

  it('describes fail-closed ids and prefilters as denies', () => {
    described('shop/web/egress/fail-closed/set-missing', 'fail_closed', '', 'deny');
    described('shop/db/ingress/fail-closed/too-many', 'fail_closed', '', 'deny');
    described('prefilter/blocklist', 'Prefilter', 'blocklist', 'deny');
  });

  it('describes unknown ids as nothing', () => {
    described('np:shop/nope/ingress/0', '', '', '');
    described('shop/db/sideways/default', '', '', '');
  });

  it('works without an IR (agent before its first apply)', () => {
    const empty = new RuleCatalog(undefined);
    expect(empty.policyOf('np:shop/db-allow-web/ingress/0')).toBeUndefined();
    expect(empty.describe('np:shop/db-allow-web/ingress/0')).toEqual({ kind: '', policy: '', action: '' });
    expect(empty.describe('shop/db/ingress/default')).toEqual({
      kind: 'default',
      policy: '',
      action: 'deny',
    });
    expect(empty.describe('prefilter/x')).toEqual({ kind: 'Prefilter', policy: 'x', action: 'deny' });
  });
});
