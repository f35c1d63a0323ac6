/**
 * Issue 21, netfilter label changes: a relabelled remote pod changes only set members, and both
 * netfilter backends write just those (nftables: one nfnetlink transaction of element changes, no
 * nft; iptables: ipset add/del in place, no iptables-restore). Checked with packets in a lab of
 * x/y/z pods: y/b (node-1) takes port 80 only from pods labelled pod=a, and x/b, z/b (node-2) are
 * relabelled in and out. A member change that fails leaves the previous members in force.
 */
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, expect, it, vi } from 'vitest';
import { reachMatrix } from '../../src/calc/index.js';
import { ApplyError, type Backend } from '../../src/dataplane/backend.js';
import { IptablesBackend } from '../../src/dataplane/iptables/index.js';
import { iptablesSetHeaders } from '../../src/dataplane/iptables/fingerprint.js';
import { createNftablesBackend } from '../../src/dataplane/nftables/index.js';
import { NftablesNetlink } from '../../src/dataplane/nftables/nfnetlink.js';
import { kernelElements } from '../../src/dataplane/nftables/elements.js';
import type { IR } from '../../src/ir/types.js';
import { networkPolicy, type Manifest } from '../support/manifests.js';
import { describeKernel } from '../support/kernel.js';
import { matrixDiff, NftLab } from './nftables-lab.js';
import { irOf, xyz } from './nftables-scenarios.js';

function ipset(netns: string, ...args: string[]): void {
  execFileSync('ip', ['netns', 'exec', netns, 'ipset', ...args]);
}

const fromA: Manifest = networkPolicy('y', 'from-a', {
  podSelector: { matchLabels: { pod: 'b' } },
  ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'a' } }, namespaceSelector: {} }] }],
});

/** Before: no b is a peer. IR1: x/b is. IR2: z/b is, x/b is not (one set gains one and loses one). */
const IR0 = irOf([...xyz(), fromA]);
const IR1 = irOf([...xyz({ 'x/b': { pod: 'a' } }), fromA]);
const IR2 = irOf([...xyz({ 'z/b': { pod: 'a' } }), fromA]);

for (const name of ['nftables', 'iptables'] as const) {
  const TAG = `${(process.pid % 10000) + 5}${name[0]}`;

  describeKernel(`${name}: a label change writes set members only, and packets follow`, () => {
    let lab: NftLab;

    function backendOf(o: { broken?: boolean } = {}): Backend {
      if (name === 'nftables')
        return createNftablesBackend(
          o.broken
            ? {
                // After the real changes: a deletion of an element that is not there fails the batch.
                mutateMembers: (changes) => [
                  ...changes,
                  {
                    kind: 'set',
                    name: changes[0]?.name ?? '?',
                    flush: false,
                    remove: kernelElements('ipv4-interval', '198.18.99.99/32'),
                    add: [],
                  },
                ],
              }
            : {},
        );
      return new IptablesBackend(
        o.broken
          ? {
              // After the first two member lines (x/a's /32, then z/b's /31 added): both ran, and
              // must be taken back.
              transformScript: (stage, script) => {
                if (stage !== 'ipset') return script;
                const lines = script.split('\n');
                expect(lines.slice(0, 2)).toEqual([
                  expect.stringMatching(/^add -exist sy-\S+ 198\.18\.0\.10\/32$/),
                  expect.stringMatching(/^add -exist sy-\S+ 198\.18\.0\.30\/31$/),
                ]);
                lines.splice(2, 0, 'add sy-no-such-set 198.18.0.1');
                return lines.join('\n');
              },
            }
          : {},
      );
    }

    async function applyAll(backend: Backend, ir: IR, previous?: IR): Promise<string[]> {
      const changed: string[] = [];
      for (const node of ir.nodes)
        changed.push(...(await backend.apply(lab.target(node.name), ir, previous)).changed);
      return changed;
    }

    async function expectReach(ir: IR, what: string): Promise<void> {
      expect(matrixDiff(reachMatrix(ir, 80, 'TCP'), await lab.reach(80, 'TCP')), what).toEqual([]);
    }

    beforeAll(async () => {
      lab = new NftLab(TAG, IR0);
      await lab.up([80]);
    });

    afterAll(async () => {
      const b = backendOf();
      for (const node of IR0.nodes) await b.remove(lab.target(node.name)).catch(() => undefined);
      lab.down();
      vi.restoreAllMocks();
    });

    it('writes the changed members alone, and the relabelled pod is let in', async () => {
      const backend = backendOf();
      await applyAll(backend, IR0);
      await expectReach(IR0, 'before');
      const netlink = vi.spyOn(NftablesNetlink.prototype, 'commitElements');
      const changed = await applyAll(backend, IR1, IR0);
      if (name === 'nftables') {
        expect(netlink).toHaveBeenCalledTimes(1);
        expect(changed).toEqual([expect.stringMatching(/^set:sy-[0-9a-f]{12}-v4$/)]);
      } else {
        // One set changed in place (x/b joins the pod=a prefixes); no chain rewritten.
        expect(changed).toEqual([expect.stringMatching(/^ipset sy-\S+ \(\+\d+ -\d+\)$/)]);
      }
      netlink.mockRestore();
      await expectReach(IR1, 'x/b relabelled pod=a');
      expect(matrixDiff(reachMatrix(IR0, 80, 'TCP'), reachMatrix(IR1, 80, 'TCP'))).not.toEqual([]);
    });

    it('a member change that fails leaves the previous members in force, and the next apply converges', async () => {
      const good = backendOf();
      await applyAll(good, IR1);
      await expectReach(IR1, 'x/b in');
      const error = await applyAll(backendOf({ broken: true }), IR2, IR1).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(ApplyError);
      expect((error as ApplyError).message).toMatch(/still in force/);
      if (name === 'iptables')
        expect((error as ApplyError).message).toMatch(/ipset restore failed at line 3/);
      // x/b still in, z/b not yet: the first member line (z/b in) was taken back, or never committed.
      await expectReach(IR1, 'after the failed change');
      const changed = await applyAll(good, IR2, IR1);
      expect(changed.length).toBeGreaterThan(0);
      await expectReach(IR2, 'z/b in, x/b out');
    });

    if (name === 'iptables')
      it('reads back only the sets a change touched, and still sees a set changed behind its back', async () => {
        const backend = new IptablesBackend();
        const target = lab.target('node-1');
        await backend.apply(target, IR2);
        const watch = await backend.watchChanges(target, () => undefined);
        const unwatched = watch?.unwatched;
        if (!unwatched?.readAfterApply) throw new Error('iptables reads its set headers after an apply');
        try {
          await unwatched.read();
          await backend.apply(target, IR1, IR2);
          expect(await unwatched.readAfterApply()).toBe(await iptablesSetHeaders(target.netns));
          // A set of ours appears behind our back: the next change's read-back, which reads only
          // the set that change touched, differs from the kernel, so the next poll finds it.
          ipset(target.netns, 'create', 'sy-behind-our-back', 'hash:net');
          await backend.apply(target, IR2, IR1);
          expect(await unwatched.readAfterApply()).not.toBe(await iptablesSetHeaders(target.netns));
          expect(await unwatched.read()).toBe(await iptablesSetHeaders(target.netns));
        } finally {
          watch?.stop();
          ipset(target.netns, 'destroy', '-exist', 'sy-behind-our-back');
        }
      });
  });
}
