import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseEtcdUrl } from '../../src/datastore/etcd.js';
import { kindFromName, objectKey, parseObjectKey, refOf } from '../../src/datastore/keys.js';

describe('datastore keys', () => {
  it('an object key parses back to the object it names', () => {
    const name = fc.stringMatching(/^[a-z0-9][a-z0-9-]{0,20}$/);
    fc.assert(
      fc.property(
        fc.constantFrom('Pod', 'Service', 'Namespace', 'GlobalPolicy'),
        name,
        fc.option(name),
        (kind, n, ns) => {
          const ref = ns === null ? { kind, name: n } : { kind, namespace: ns, name: n };
          expect(parseObjectKey(objectKey(ref))).toEqual(ref);
        },
      ),
    );
  });

  it('reads the object a manifest names; namespaced kinds default to the default namespace', () => {
    expect(refOf({ kind: 'Pod', metadata: { name: 'a' } })).toEqual({
      kind: 'Pod',
      namespace: 'default',
      name: 'a',
    });
    expect(refOf({ kind: 'Namespace', metadata: { name: 'shop', namespace: 'ignored' } })).toEqual({
      kind: 'Namespace',
      name: 'shop',
    });
    expect(refOf({ kind: 'Pod', metadata: {} })).toBeUndefined();
    expect(refOf('text')).toBeUndefined();
  });

  it('keys outside the object prefix, or with extra segments, are not objects', () => {
    expect(parseObjectKey('/switchyard/config/sequence')).toBeUndefined();
    expect(parseObjectKey('/switchyard/objects/Pod/ns/a/b')).toBeUndefined();
  });

  it("accepts kubectl's kind names", () => {
    expect(kindFromName('po')).toBe('Pod');
    expect(kindFromName('NetworkPolicies')).toBe('NetworkPolicy');
    expect(kindFromName('svc')).toBe('Service');
    expect(kindFromName('deployments')).toBeUndefined();
  });

  it('etcd URLs: http(s) with a host, optionally behind etcd:', () => {
    expect(parseEtcdUrl('etcd:http://127.0.0.1:2379')).toBe('http://127.0.0.1:2379');
    expect(parseEtcdUrl('http://127.0.0.1:2379/')).toBe('http://127.0.0.1:2379');
    expect(() => parseEtcdUrl('127.0.0.1:2379')).toThrow(/not an etcd URL/);
    expect(() => parseEtcdUrl('ftp://x')).toThrow(/not an etcd URL/);
  });
});
