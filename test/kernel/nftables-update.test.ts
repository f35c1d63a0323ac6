/**
 * Updates and atomicity, on a node namespace without traffic: every incremental update leaves the
 * kernel exactly as a from-scratch apply of the same IR would (compared object by object), writes
 * only what changed, and a broken transaction changes nothing and names its failing line. Once per
 * policy mode: in table mode an update rewrites classes, maps and outcome chains, in the same one
 * transaction.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ApplyError, type NodeTarget } from '../../src/dataplane/backend.js';
import { runInNetns } from '../../src/dataplane/exec.js';
import { createNftablesBackend, nftablesBackend } from '../../src/dataplane/nftables/index.js';
import { missingChainDeletion } from '../../src/dataplane/nftables/refusal.js';
import { POLICY_MODES, type PolicyMode } from '../../src/ir/decision-table.js';
import type { IR } from '../../src/ir/types.js';
import { networkPolicy, type Manifest } from '../support/manifests.js';
import { describeKernel } from '../support/kernel.js';
import { addNetns, batchRecordingBackend, delNetns, kernelState } from './nftables-lab.js';
import { guardrails, irOf, xyz } from './nftables-scenarios.js';

/** y/b (node-1) accepts pods labelled pod=a from any namespace. */
const fromA: Manifest = networkPolicy('y', 'from-a', {
  podSelector: { matchLabels: { pod: 'b' } },
  ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'a' } }, namespaceSelector: {} }] }],
});

function stepsOf(mode: PolicyMode): { name: string; ir: IR }[] {
  const irOfMode = (manifests: Manifest[]): IR => irOf(manifests, mode);
  return [
    { name: 'no policy', ir: irOfMode(xyz()) },
    { name: 'guardrails, named ports, prefilter', ir: irOfMode([...xyz(), ...guardrails(), fromA]) },
    // x/b lives on node-2: on node-1 only the membership of "pods pod=a" changes.
    {
      name: 'x/b relabelled pod=a',
      ir: irOfMode([...xyz({ 'x/b': { pod: 'a' } }), ...guardrails(), fromA]),
    },
    {
      name: 'x/c deleted',
      ir: irOfMode([
        ...xyz({ 'x/b': { pod: 'a' } }).filter((m) => !isPod(m, 'x', 'c')),
        ...guardrails(),
        fromA,
      ]),
    },
    { name: 'back to no policy', ir: irOfMode(xyz()) },
    { name: 'policies again', ir: irOfMode([...xyz(), ...guardrails(), fromA]) },
    // z/a (node-1) loses z/egress-named (named ports: address . port sets, a port range, SCTP)
    // and gains it back: its tier chains are refilled, the flow chains of those rules go and come.
    {
      name: 'z/a relabelled pod=b',
      ir: irOfMode([...xyz({ 'z/a': { pod: 'b' } }), ...guardrails(), fromA]),
    },
    { name: 'z/a back to pod=a', ir: irOfMode([...xyz(), ...guardrails(), fromA]) },
  ];
}

function isPod(m: Manifest, ns: string, name: string): boolean {
  const meta = m.metadata as { name?: string; namespace?: string } | undefined;
  return m.kind === 'Pod' && meta?.namespace === ns && meta.name === name;
}

async function listing(target: NodeTarget): Promise<string> {
  return (await runInNetns(target.netns, 'nft', ['-s', 'list', 'table', 'inet', 'switchyard'])).stdout;
}

for (const mode of POLICY_MODES) {
  const TAG = `${(process.pid % 10000) + 2}${mode[0]}`;
  const NODE = 'node-1';
  const inc: NodeTarget = { scope: `nft${TAG}`, node: NODE, netns: `sy-nft${TAG}-inc` };
  const ref: NodeTarget = { scope: `nft${TAG}`, node: NODE, netns: `sy-nft${TAG}-ref` };
  const steps = stepsOf(mode);

  describeKernel(`nftables (${mode}): incremental updates and atomicity`, () => {
    beforeAll(() => {
      addNetns(inc.netns);
      addNetns(ref.netns);
    });

    afterAll(() => {
      delNetns(inc.netns);
      delNetns(ref.netns);
    });

    it('each update equals a from-scratch apply and writes only what changed', async () => {
      let previous: IR | undefined;
      // Which steps went as a rule batch over nfnetlink rather than an nft script.
      const { backend: spied, batched, step: stepNamed } = batchRecordingBackend();
      for (const step of steps) {
        stepNamed(step.name);
        const result = await spied.apply(inc, step.ir, previous);
        if (process.env.NFT_DEBUG)
          console.log(step.name, result.changed.length, result.changed.slice(0, 12), result.durationMs);
        await nftablesBackend.apply(ref, step.ir);
        expect(await kernelState(inc), step.name).toEqual(await kernelState(ref));
        if (!previous) expect(result.changed).toContain('table:switchyard');
        else expect(result.changed).not.toContain('table:switchyard');
        if (step.name === 'x/b relabelled pod=a' && mode === 'walk') {
          // One label on another node's pod: exactly one set is rewritten, no chain, no map.
          expect(result.changed).toHaveLength(1);
          expect(result.changed[0]).toMatch(/^set:sy-[0-9a-f]{12}-v4$/);
        }
        if (step.name === 'x/b relabelled pod=a' && mode === 'table') {
          // Tables name addresses, not sets: x/b joins y/b's class of pod=a peers. One map, no chain.
          expect(result.changed).toEqual(['map:tw-sy9decdaec1be-peers-v4']);
        }
        if (step.name === 'x/c deleted') {
          expect(result.changed).toEqual(
            expect.arrayContaining([
              'chain:fw-sybcd1a78c109',
              mode === 'walk'
                ? 'chain:tw-sybcd1a78c109-k8s'
                : expect.stringMatching(/^chain:tw-sybcd1a78c109-out-/),
              'map:fw-dispatch',
            ]),
          );
        }
        previous = step.ir;
      }
      // A pod deleted (its chains go, a dispatch element with them) and a local pod relabelled
      // (walk mode: its tier chains refilled, flow chains added and deleted) go as a rule batch;
      // a prefilter coming or going (a base chain changes) and a members-only relabel do not, nor
      // in table mode a relabel that brings new decision maps (the nft script writes those).
      expect(batched).toEqual(
        mode === 'walk'
          ? ['x/c deleted', 'z/a relabelled pod=b', 'z/a back to pod=a']
          : ['x/c deleted', 'z/a relabelled pod=b'],
      );
      // Applying the same IR again writes nothing at all.
      const last = steps.at(-1)?.ir as IR;
      expect((await spied.apply(inc, last, last)).changed).toEqual([]);
    });

    for (const mode of ['incremental', 'full'] as const) {
      it(`a broken ${mode} transaction leaves the previous ruleset in force and names its line`, async () => {
        const start = steps[2]?.ir as IR;
        // A chain changes too (x/c goes): the update is a rule batch, not a members-only one (that
        // one's failure is netfilter-member-delta's). The batch is refused (its last message
        // deletes a chain that does not exist), then the same change as an nft script, too.
        const next = steps[3]?.ir as IR;
        await nftablesBackend.apply(inc, start);
        const before = await listing(inc);
        expect(before).toContain('chain forward');
        let brokenLine = 0;
        let batchBroken = false;
        const broken = createNftablesBackend({
          mutateBatch: (messages) => {
            batchBroken = true;
            return [...messages, missingChainDeletion('switchyard')];
          },
          mutateScript: (script) => {
            const lines = script.split('\n');
            // After the real changes, so they would have been committed were nft not all-or-nothing.
            brokenLine = lines.length;
            lines.splice(
              lines.length - 1,
              0,
              'add rule inet switchyard forward meta l4proto tcp th dport 99999 accept',
            );
            return lines.join('\n');
          },
        });
        const error = await broken.apply(inc, next, mode === 'incremental' ? start : undefined).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(error).toBeInstanceOf(ApplyError);
        const e = error as ApplyError;
        expect(e.backend).toBe('nftables');
        expect(e.message).toContain(`line ${brokenLine}`);
        expect(e.detail).toMatch(
          new RegExp(`> +${brokenLine} \\| add rule inet switchyard forward meta l4proto tcp th dport 99999`),
        );
        expect(await listing(inc)).toBe(before);
        expect(batchBroken).toBe(mode === 'incremental');
      });
    }

    it('an update against a table that is gone falls back to writing the whole table', async () => {
      await nftablesBackend.remove(inc);
      const result = await nftablesBackend.apply(inc, steps[2]?.ir as IR, steps[1]?.ir);
      expect(result.changed).toContain('table:switchyard');
      await nftablesBackend.apply(ref, steps[2]?.ir as IR);
      expect(await kernelState(inc)).toEqual(await kernelState(ref));
    });

    it('remove() leaves no table, and tolerates an absent one', async () => {
      await nftablesBackend.remove(inc);
      await nftablesBackend.remove(inc);
      expect((await runInNetns(inc.netns, 'nft', ['list', 'tables'])).stdout).not.toContain('switchyard');
    });
  });
}
