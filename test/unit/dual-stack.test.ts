/**
 * Issue 19, model and calculation: pods with one address per family, dual-stack Services
 * (ipFamilies, ipFamilyPolicy, clusterIPs) defaulted and validated as the API server does, one
 * service table per family whose address and backends are all of that family, EndpointSlices per
 * addressType, and families that do not mix in ipBlocks.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { allocate, buildIR, evaluate, explain, parseDestination } from '../../src/calc/index.js';
import { resolveTarget } from '../../src/lab/probe-service.js';
import { validateManifestTexts, type ManifestIssue } from '../../src/model/index.js';
import {
  expectIssue,
  lineContaining,
  modelOf,
  namespace,
  networkPolicy,
  pod,
  service,
  toYaml,
  type Manifest,
} from '../support/manifests.js';

const FILE = 'cluster.yaml';

function issuesOf(manifests: readonly Manifest[]): { text: string; issues: ManifestIssue[] } {
  const text = toYaml(manifests);
  return { text, issues: validateManifestTexts([{ file: FILE, text }]).issues };
}

const web = (spec: Record<string, unknown> = {}): Manifest =>
  service('x', 'web', { selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080 }], ...spec });

const pods: Manifest[] = [
  namespace('x'),
  pod('x', 'a', { labels: { app: 'web' }, ports: [{ containerPort: 8080 }] }),
  pod('x', 'b', { labels: { app: 'web' }, ports: [{ containerPort: 8080 }] }),
  pod('x', 'c', { labels: { app: 'client' } }),
];

function dualIR(manifests: readonly Manifest[]) {
  const model = modelOf(manifests);
  const alloc = allocate(model, {}, { dualStackPods: true });
  return { model, alloc, ir: buildIR(model, alloc) };
}

describe('pods: status.podIPs', () => {
  it('takes one address per family, IPv4 first in the endpoint', () => {
    const m = modelOf([
      namespace('x'),
      {
        ...pod('x', 'a'),
        status: { podIP: 'fd00:5957::9', podIPs: [{ ip: 'fd00:5957::9' }, { ip: '198.18.0.9' }] },
      },
    ]);
    const ir = buildIR(m, allocate(m));
    expect(ir.endpoints[0]?.addresses).toEqual(['198.18.0.9', 'fd00:5957::9']);
  });

  it('refuses two addresses of one family and a podIPs[0] that is not podIP, naming the field', () => {
    const twoV4 = { ...pod('x', 'a'), status: { podIPs: [{ ip: '198.18.0.9' }, { ip: '198.18.0.10' }] } };
    const notFirst = {
      ...pod('x', 'b'),
      status: { podIP: '198.18.0.11', podIPs: [{ ip: 'fd00:5957::b' }, { ip: '198.18.0.11' }] },
    };
    const { text, issues } = issuesOf([namespace('x'), twoV4, notFirst]);
    expectIssue(issues, {
      file: FILE,
      line: lineContaining(text, 'ip: 198.18.0.10'),
      kind: 'Pod',
      object: 'x/a',
      field: 'status.podIPs[1].ip',
      message: /198\.18\.0\.10 must be of the other family than 198\.18\.0\.9/,
    });
    expectIssue(issues, {
      file: FILE,
      line: lineContaining(text, 'ip: fd00:5957::b'),
      kind: 'Pod',
      object: 'x/b',
      field: 'status.podIPs[0].ip',
      message: /must be the same as podIP \(198\.18\.0\.11\)/,
    });
  });

  it('lab allocation gives every pod an fd00:5957::/64 address, stable across a re-allocation', () => {
    const { model, alloc, ir } = dualIR(pods);
    for (const e of ir.endpoints) {
      expect(e.addresses).toHaveLength(2);
      expect(e.addresses[1]).toMatch(/^fd00:5957::[0-9a-f]+$/);
    }
    const again = allocate(model, alloc, { dualStackPods: true });
    expect(again.podAddressesV6).toEqual(alloc.podAddressesV6);
    // Without the option (compile, a manifest directory) nothing changes for IPv4-only pods.
    expect(buildIR(model, allocate(model)).endpoints.every((e) => e.addresses.length === 1)).toBe(true);
  });
});

describe('services: ipFamilies, ipFamilyPolicy, clusterIPs', () => {
  it('defaults as a dual-stack API server does', () => {
    const cases: [Record<string, unknown>, unknown][] = [
      [{}, { ipFamilies: undefined, ipFamilyPolicy: undefined }],
      [
        { ipFamilyPolicy: 'PreferDualStack' },
        { ipFamilies: ['IPv4', 'IPv6'], ipFamilyPolicy: 'PreferDualStack' },
      ],
      [
        { ipFamilyPolicy: 'RequireDualStack', ipFamilies: ['IPv6'] },
        { ipFamilies: ['IPv6', 'IPv4'], ipFamilyPolicy: 'RequireDualStack' },
      ],
      [{ ipFamilies: ['IPv6'] }, { ipFamilies: ['IPv6'], ipFamilyPolicy: 'SingleStack' }],
      [{ clusterIP: 'fd00:5957:0:1::7' }, { ipFamilies: ['IPv6'], ipFamilyPolicy: 'SingleStack' }],
    ];
    for (const [spec, want] of cases) {
      const s = modelOf([namespace('x'), web(spec)]).services[0];
      expect({ ipFamilies: s?.ipFamilies, ipFamilyPolicy: s?.ipFamilyPolicy }, JSON.stringify(spec)).toEqual(
        want,
      );
    }
  });

  it('refuses what ValidateService refuses, naming the field', () => {
    // [spec, field, message, the line it is reported on]
    const cases: [Record<string, unknown>, string, RegExp, string][] = [
      [
        { clusterIP: '198.19.0.7', clusterIPs: ['198.19.0.8'] },
        'spec.clusterIPs[0]',
        /must be the same as clusterIP/,
        '- 198.19.0.8',
      ],
      [
        { ipFamilyPolicy: 'PreferDualStack', clusterIPs: ['198.19.0.7', '198.19.0.8'] },
        'spec.clusterIPs[1]',
        /other family/,
        '- 198.19.0.8',
      ],
      [
        { ipFamilyPolicy: 'PreferDualStack', ipFamilies: ['IPv4', 'IPv4'] },
        'spec.ipFamilies[1]',
        /listed twice/,
        'ipFamilies:',
      ],
      [
        { ipFamilies: ['IPv6'], clusterIPs: ['198.19.0.7'] },
        'spec.clusterIPs[0]',
        /not an IPv6 address/,
        '- 198.19.0.7',
      ],
      [
        { ipFamilyPolicy: 'SingleStack', ipFamilies: ['IPv4', 'IPv6'] },
        'spec.ipFamilyPolicy',
        /RequireDualStack or PreferDualStack/,
        'ipFamilyPolicy:',
      ],
      [
        { ipFamilies: ['IPv4', 'IPv6'] },
        'spec.ipFamilyPolicy',
        /RequireDualStack or PreferDualStack/,
        'spec:',
      ],
    ];
    for (const [spec, field, message, needle] of cases) {
      const { text, issues } = issuesOf([namespace('x'), web(spec)]);
      const at = lineContaining(text, needle) + (needle === 'ipFamilies:' ? 2 : 0);
      expectIssue(issues, { file: FILE, line: at, kind: 'Service', object: 'x/web', field, message });
    }
  });

  it('a dual-stack service gives one table per family: the IPv4 one keeps its id, the IPv6 one is /IPv6 with only IPv6 addresses', () => {
    const { ir, alloc } = dualIR([...pods, web({ ipFamilyPolicy: 'RequireDualStack', type: 'NodePort' })]);
    expect(ir.services.map((t) => [t.id, t.family])).toEqual([
      ['x/web:80/TCP', undefined],
      ['x/web:80/TCP/IPv6', 6],
    ]);
    const [v4, v6] = ir.services;
    expect(v4?.address).toBe(alloc.serviceAddresses['x/web']);
    expect(v6?.address).toBe(alloc.serviceAddressesV6?.['x/web']);
    expect(v6?.address).toMatch(/^fd00:5957:0:1::/);
    expect(v4?.backends.map((b) => b.address).every((a) => !a.includes(':'))).toBe(true);
    expect(v6?.backends.map((b) => b.address).every((a) => a.startsWith('fd00:5957::'))).toBe(true);
    expect(v6?.backends.map((b) => b.endpoint)).toEqual(v4?.backends.map((b) => b.endpoint));
    expect(v6?.nodePort).toBe(v4?.nodePort);
  });

  it('an IPv6 single-stack service has only its IPv6 table and no IPv4 address; a plain one is as before', () => {
    const { ir, alloc } = dualIR([
      ...pods,
      web({ ipFamilies: ['IPv6'] }),
      service('x', 'old', { selector: { app: 'web' }, ports: [{ port: 81 }] }),
    ]);
    expect(ir.services.map((t) => t.id)).toEqual(['x/old:81/TCP', 'x/web:80/TCP/IPv6']);
    expect(alloc.serviceAddresses['x/web']).toBeUndefined();
    expect(Object.keys(alloc.serviceAddressesV6 ?? {})).toEqual(['x/web']);
  });

  it('stated clusterIPs are kept per family and a second service may not reuse one', () => {
    const m = [
      ...pods,
      web({
        ipFamilyPolicy: 'PreferDualStack',
        clusterIP: '198.19.0.7',
        clusterIPs: ['198.19.0.7', 'fd00:5957:0:1::7'],
      }),
      service('x', 'dup', { clusterIP: 'fd00:5957:0:1::7', ports: [{ port: 80 }] }),
    ];
    const { text, issues } = issuesOf(m);
    expectIssue(issues, {
      file: FILE,
      line: lineContaining(text, 'clusterIP: fd00:5957:0:1::7'),
      kind: 'Service',
      object: 'x/dup',
      field: 'spec.clusterIP',
      message: /fd00:5957:0:1::7 is already used by service x\/web/,
    });
    const { ir } = dualIR(m.slice(0, -1));
    expect(ir.services.map((t) => t.address)).toEqual(['198.19.0.7', 'fd00:5957:0:1::7']);
  });
});

describe('EndpointSlices per family', () => {
  it('an IPv6 slice feeds only the IPv6 table, an IPv4 slice only the IPv4 one', () => {
    const slice = (name: string, addressType: string, address: string): Manifest => ({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name, namespace: 'x', labels: { 'kubernetes.io/service-name': 'ext' } },
      addressType,
      ports: [{ port: 9000 }],
      endpoints: [{ addresses: [address] }],
    });
    const { ir } = dualIR([
      namespace('x'),
      service('x', 'ext', { ipFamilyPolicy: 'RequireDualStack', ports: [{ port: 90 }] }),
      slice('ext-4', 'IPv4', '198.18.9.9'),
      slice('ext-6', 'IPv6', 'fd00:5957::99'),
    ]);
    expect(ir.services.map((t) => [t.id, t.backends.map((b) => b.address)])).toEqual([
      ['x/ext:90/TCP', ['198.18.9.9']],
      ['x/ext:90/TCP/IPv6', ['fd00:5957::99']],
    ]);
  });
});

describe('policy peers in either family', () => {
  it('an IPv6 ipBlock allows IPv6 peers only, and an IPv6 except in an IPv4 cidr names the field', () => {
    const { ir } = dualIR([
      ...pods,
      networkPolicy('x', 'np', {
        podSelector: { matchLabels: { app: 'web' } },
        ingress: [{ from: [{ ipBlock: { cidr: 'fd00:5957::/64', except: ['fd00:5957::4/128'] } }] }],
      }),
    ]);
    const addr = (id: string, family: 4 | 6): string =>
      ir.endpoints
        .find((e) => e.id === id)
        ?.addresses.find((a) => a.includes(':') === (family === 6)) as string;
    const to = addr('x/a', 6);
    expect(evaluate(ir, { src: addr('x/c', 6), dst: to, protocol: 'TCP', dport: 8080 }).allowed).toBe(
      addr('x/c', 6) !== 'fd00:5957::4',
    );
    expect(
      evaluate(ir, { src: addr('x/c', 4), dst: addr('x/a', 4), protocol: 'TCP', dport: 8080 }).allowed,
    ).toBe(false);
    const { text, issues } = issuesOf([
      namespace('x'),
      networkPolicy('x', 'bad', {
        podSelector: {},
        ingress: [{ from: [{ ipBlock: { cidr: '198.18.0.0/16', except: ['fd00:5957::/64'] } }] }],
      }),
    ]);
    expectIssue(issues, {
      file: FILE,
      line: lineContaining(text, '- fd00:5957::/64'),
      kind: 'NetworkPolicy',
      object: 'x/bad',
      field: 'spec.ingress[0].from[0].ipBlock.except[0]',
      message: /fd00:5957::\/64 must be a strict subset of cidr 198\.18\.0\.0\/16/,
    });
  });
});

describe('reach and explain take --family', () => {
  const root = join(import.meta.dirname, '..', '..');
  const built = existsSync(join(root, 'dist', 'cli', 'main.js')) || process.env.CI === 'true';
  const run = (...args: string[]): { code: number; stdout: string } => {
    const r = spawnSync(process.execPath, [join(root, 'bin', 'switchyard'), ...args], {
      cwd: root,
      encoding: 'utf8',
    });
    return { code: r.status ?? -1, stdout: r.stdout };
  };

  it.runIf(built)(
    'reach --family 6 --json: the same matrix shape plus family; explain names the IPv6 addresses',
    () => {
      const v4 = JSON.parse(run('reach', 'examples/xyz', '--json').stdout) as Record<string, unknown>;
      const v6 = JSON.parse(run('reach', 'examples/xyz', '--json', '--family', '6').stdout) as Record<
        string,
        unknown
      >;
      expect(v6.family).toBe(6);
      expect({ ...v6, family: undefined }).toEqual({ ...v4, family: undefined });
      const x = JSON.parse(
        run(
          'explain',
          'examples/xyz',
          '--from',
          'y/a',
          '--to',
          'x/a',
          '--port',
          '80',
          '--family',
          '6',
          '--json',
        ).stdout,
      ) as { family: number; verdict?: unknown; from: { address: string }; to: { address: string } };
      expect(x.family).toBe(6);
      expect(x.from.address).toMatch(/^fd00:5957::/);
      expect(x.to.address).toMatch(/^fd00:5957::/);
      expect(run('reach', 'examples/xyz', '--family', '5').code).toBe(2);
    },
  );
});

describe('explain over IPv6: pod pairs, [IPv6]:PORT and IPv6 cluster IPs', () => {
  // a and b serve 8080; only c may reach them (pod selector), on 8080 only.
  const guarded = [
    ...pods,
    web({ ipFamilyPolicy: 'PreferDualStack' }),
    service('x', 'v4', { selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080 }] }),
    networkPolicy('x', 'web-from-client', {
      podSelector: { matchLabels: { app: 'web' } },
      ingress: [{ from: [{ podSelector: { matchLabels: { app: 'client' } } }], ports: [{ port: 8080 }] }],
    }),
  ];
  const v6Of = (ir: ReturnType<typeof dualIR>['ir'], id: string): string =>
    ir.endpoints.find((e) => e.id === id)?.addresses.find((a) => a.includes(':')) ?? '';

  it('[IPV6]:PORT parses as the address and the port; a bare bracketed address keeps no port', () => {
    expect(parseDestination('[fd00:5957::2]:5432')).toEqual({ target: 'fd00:5957::2', port: 5432 });
    expect(parseDestination('[fd00:5957::2]')).toEqual({ target: 'fd00:5957::2' });
    expect(() => parseDestination('[fd00:5957::2]:70000')).toThrow(/1-65535/);
    expect(parseDestination('198.18.0.2:80')).toEqual({ target: '198.18.0.2', port: 80 });
  });

  it('a pod pair by name with family 6, or by IPv6 address, is judged by the same deciding rule as IPv4', () => {
    const { model, ir } = dualIR(guarded);
    const allowed = explain(model, ir, { from: 'x/c', to: 'x/a', protocol: 'TCP', port: 8080, family: 6 });
    expect(allowed.allowed).toBe(true);
    expect(allowed.from.address).toBe(v6Of(ir, 'x/c'));
    expect(allowed.to.address).toBe(v6Of(ir, 'x/a'));
    expect(allowed.ingress?.rule?.id).toBe('np:x/web-from-client/ingress/0');
    const v4 = explain(model, ir, { from: 'x/c', to: 'x/a', protocol: 'TCP', port: 8080 });
    expect(v4.ingress?.rule?.id).toBe(allowed.ingress?.rule?.id);
    // The pod named at the other end of an IPv6 address stands for its IPv6 address.
    const denied = explain(model, ir, { from: 'x/b', to: `[${v6Of(ir, 'x/a')}]:8080`, protocol: 'TCP' });
    expect(denied.allowed).toBe(false);
    expect(denied.from.address).toBe(v6Of(ir, 'x/b'));
    expect(denied.decidedAt).toBe('ingress');
  });

  it('a service by name with family 6 and its IPv6 cluster IP follow the IPv6 table to IPv6 backends', () => {
    const { model, ir, alloc } = dualIR(guarded);
    const vip = alloc.serviceAddressesV6?.['x/web'] ?? '';
    for (const x of [
      explain(model, ir, { from: 'x/c', to: 'svc/x/web:80', protocol: 'TCP', family: 6 }),
      explain(model, ir, { from: 'x/c', to: `[${vip}]:80`, protocol: 'TCP' }),
    ]) {
      expect(x.to.address).toBe(vip);
      expect(x.from.address).toBe(v6Of(ir, 'x/c'));
      expect(x.allowed).toBe(true);
      expect(x.service?.backends.map((b) => b.address).sort()).toEqual(
        [v6Of(ir, 'x/a'), v6Of(ir, 'x/b')].sort(),
      );
      expect(x.service?.backends.every((b) => b.ingress?.rule?.id === 'np:x/web-from-client/ingress/0')).toBe(
        true,
      );
    }
    const denied = explain(model, ir, { from: 'x/a', to: 'svc/x/web:80', protocol: 'TCP', family: 6 });
    expect(denied.allowed).toBe(false);
    expect(() => explain(model, ir, { from: 'x/c', to: 'svc/x/v4:80', protocol: 'TCP', family: 6 })).toThrow(
      /service x\/v4 has no IPv6 cluster IP/,
    );
  });
});

describe('lab probe --family 6 resolves the IPv6 table', () => {
  it("svc/NS/NAME:PORT is the service's IPv6 cluster IP; a single-stack service says it has none", () => {
    const { ir, alloc } = dualIR([
      ...pods,
      web({ ipFamilyPolicy: 'PreferDualStack' }),
      service('x', 'v4', { selector: { app: 'web' }, ports: [{ port: 80 }] }),
    ]);
    expect(resolveTarget(ir, 'svc/x/web:80', 'TCP', 6)).toEqual({
      address: alloc.serviceAddressesV6?.['x/web'],
      port: 80,
    });
    expect(resolveTarget(ir, 'svc/x/web:80', 'TCP')).toEqual({
      address: alloc.serviceAddresses['x/web'],
      port: 80,
    });
    expect(() => resolveTarget(ir, 'svc/x/v4:80', 'TCP', 6)).toThrow(/service x\/v4 has no IPv6 cluster IP/);
  });
});
