/**
 * The eBPF backend's program cache keeps what tells a program apart between applies, not the
 * program: at 10k endpoints the instructions of a node's hundreds of programs were 20 MiB of heap.
 */
import { describe, expect, it } from 'vitest';
import { allocate, nodeView } from '../../src/dataplane/ebpf/node.js';
import { ProgramCache } from '../../src/dataplane/ebpf/program-cache.js';
import { policyProgram, programHash } from '../../src/dataplane/ebpf/program.js';
import { compileIR, modelOf, namespace, networkPolicy, pod } from '../support/manifests.js';

function view(): ReturnType<typeof nodeView> {
  const ir = compileIR(
    modelOf([
      namespace('shop'),
      pod('shop', 'db', { labels: { app: 'db' }, ip: '198.18.0.10', node: 'n1' }),
      pod('shop', 'web', { labels: { app: 'web' }, ip: '198.18.0.11', node: 'n1' }),
      networkPolicy('shop', 'db-from-web', {
        podSelector: { matchLabels: { app: 'db' } },
        policyTypes: ['Ingress'],
        ingress: [{ from: [{ podSelector: { matchLabels: { app: 'web' } } }], ports: [{ port: 5432 }] }],
      }),
    ]),
  );
  return nodeView(ir, 'n1');
}

describe('eBPF program cache', () => {
  it('keeps no instructions between applies, and makes the same program again when asked', () => {
    const v = view();
    const alloc = allocate(v);
    const cache = new ProgramCache();
    const first = v.ruleSets.map((rs) => cache.program(rs, alloc));
    expect(first.every((f) => !f.cached && f.entry.generated !== undefined)).toBe(true);
    cache.keep(first.map((f) => f.entry));
    v.ruleSets.forEach((rs, i) => {
      const { cached, entry } = cache.program(rs, alloc);
      expect(cached).toBe(true);
      expect(entry.generated).toBeUndefined();
      const again = cache.generated(entry, rs, alloc);
      expect(programHash(again.program)).toBe(entry.hash);
      expect(again.name).toBe(entry.name);
      expect(entry.hash).toBe(programHash(policyProgram(rs, alloc).program));
      expect(entry.hash).toBe(first[i]?.entry.hash);
    });
  });
});
