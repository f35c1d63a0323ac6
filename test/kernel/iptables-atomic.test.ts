/**
 * Apply is all or nothing. Each case breaks one step of an update that changes sets and chains in
 * both families, and checks that the error names the failing line of the script that failed, that
 * iptables-save (IPv4 and IPv6) and `ipset save` of the node are exactly as before, and that
 * packets still get the old verdicts:
 * - an invalid rule in the IPv6 script (the IPv4 tables were already committed: they are restored);
 * - an invalid rule in the IPv4 script;
 * - an ipset name clash (a foreign set of another type under the name of a new set: the swap fails);
 * - an invalid set member;
 * and a failing first apply leaves nothing behind. Both policy modes: in table mode the update
 * is a new generation of decision-table sets, built in place, and new table chains.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ApplyError } from '../../src/dataplane/backend.js';
import { IptablesBackend } from '../../src/dataplane/iptables/index.js';
import { planForNode } from '../../src/dataplane/iptables/render.js';
import type { IR } from '../../src/ir/types.js';
import { POLICY_MODES, type PolicyMode } from '../../src/ir/decision-table.js';
import { describeKernel } from '../support/kernel.js';
import { Cluster, namespace, networkPolicy, pod, type Manifest } from '../support/manifests.js';
import { inNs, IptLab } from './iptables-lab.js';

const PORTS = [{ containerPort: 80 }];

function pods(): Manifest[] {
  return [
    namespace('a', { team: 'a' }),
    namespace('b', { team: 'b' }),
    pod('a', 'one', { labels: { app: 'one' }, ip: '198.18.3.1', node: 'node-1', ports: PORTS }),
    pod('a', 'two', { labels: { app: 'two' }, ip: '198.18.3.2', node: 'node-1', ports: PORTS }),
    pod('b', 'one', { labels: { app: 'one' }, ip: '198.18.3.3', node: 'node-2', ports: PORTS }),
  ];
}

/** a/one accepts only namespace a. */
const oldIr = (policyMode: PolicyMode): IR =>
  new Cluster(
    [
      ...pods(),
      networkPolicy('a', 'from-a', {
        podSelector: { matchLabels: { app: 'one' } },
        ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'a' } } }] }],
      }),
    ],
    { policyMode },
  ).ir;

/**
 * a/one accepts only app=one pods from anywhere, and anyone on port 81: a new set, other chains in
 * both families (the port rule has no set, so it is in the IPv6 table too).
 */
const newIr = (policyMode: PolicyMode): IR =>
  new Cluster(
    [
      ...pods(),
      networkPolicy('a', 'from-ones', {
        podSelector: { matchLabels: { app: 'one' } },
        ingress: [
          { from: [{ namespaceSelector: {}, podSelector: { matchLabels: { app: 'one' } } }] },
          { ports: [{ port: 81 }] },
        ],
      }),
    ],
    { policyMode },
  ).ir;

const BAD_RULE = '-A SY-FORWARD -j SY-NO-SUCH-CHAIN';

function injectBeforeLastCommit(script: string): string {
  const i = script.lastIndexOf('COMMIT');
  return `${script.slice(0, i)}${BAD_RULE}\n${script.slice(i)}`;
}

interface Snapshot {
  v4: string;
  v6: string;
  sets: string;
}

function snapshot(netns: string, ignoreSet?: string): Snapshot {
  const clean = (text: string): string =>
    text
      .split('\n')
      .filter((l) => l && !l.startsWith('#'))
      .join('\n');
  // Flow sets' elements are the kernel's own (added, counted and timed out by traffic): not state.
  const sets = inNs(netns, 'ipset', ['save'])
    .split('\n')
    .filter((l) => l && !(ignoreSet && l.split(' ')[1] === ignoreSet) && !l.startsWith('add sy-flow'))
    .sort()
    .join('\n');
  return {
    v4: clean(inNs(netns, 'iptables-nft-save', [])),
    v6: clean(inNs(netns, 'ip6tables-nft-save', [])),
    sets,
  };
}

for (const policyMode of POLICY_MODES)
  describeKernel(`iptables apply is atomic (${policyMode})`, () => {
    const OLD = oldIr(policyMode);
    const NEW = newIr(policyMode);
    const lab = new IptLab(policyMode === 'walk' ? 'atom' : 'atomt', OLD);
    const good = new IptablesBackend({ mode: 'nft' });
    const node1 = (): ReturnType<IptLab['target']> => lab.target('node-1');

    async function oldVerdictsHold(): Promise<void> {
      // Old: b/one → a/one denied, a/two → a/one allowed. New would flip both.
      const r = await lab.probe({ pod: 'b/one' }, [
        { host: lab.address('a/one'), port: 80, protocol: 'TCP' },
      ]);
      const s = await lab.probe({ pod: 'a/two' }, [
        { host: lab.address('a/one'), port: 80, protocol: 'TCP' },
      ]);
      expect([r[0], s[0]]).toEqual([false, true]);
    }

    async function expectUnchanged(broken: IptablesBackend, ignoreSet?: string): Promise<ApplyError> {
      const before = snapshot(node1().netns, ignoreSet);
      const err = await broken.apply(node1(), NEW, OLD).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(ApplyError);
      expect(snapshot(node1().netns, ignoreSet)).toEqual(before);
      await oldVerdictsHold();
      return err as ApplyError;
    }

    beforeAll(async () => {
      await lab.up([80]);
      for (const t of lab.targets()) await good.apply(t, OLD);
    });

    afterAll(async () => {
      await lab.down();
    });

    it('the update itself is valid (sanity)', async () => {
      await oldVerdictsHold();
      const plan = planForNode(NEW, 'node-1');
      expect(plan.tables.map((t) => `${t.family}/${t.table}`)).toEqual(['4/filter', '6/filter']);
    });

    it('restores committed IPv4 tables and sets when the IPv6 script fails, naming its line', async () => {
      const broken = new IptablesBackend({
        mode: 'nft',
        transformScript: (stage, s) => (stage === 'ip6tables' ? injectBeforeLastCommit(s) : s),
      });
      const err = await expectUnchanged(broken);
      const line = Number(/at line (\d+)/.exec(err.message)?.[1]);
      expect(line).toBeGreaterThan(0);
      expect(err.message).toContain('ip6tables-nft-restore');
      expect(err.detail).toContain(`> ${String(line).padStart(5)} | ${BAD_RULE}`);
    });

    it('changes nothing when the IPv4 script fails', async () => {
      const broken = new IptablesBackend({
        mode: 'nft',
        transformScript: (stage, s) => (stage === 'iptables' ? injectBeforeLastCommit(s) : s),
      });
      const err = await expectUnchanged(broken);
      expect(err.message).toContain('iptables-nft-restore');
      expect(err.detail).toContain(`| ${BAD_RULE}`);
    });

    it('changes nothing on an ipset name clash, and leaves the foreign set alone', async () => {
      const oldNames = new Set(planForNode(OLD, 'node-1').sets.map((s) => s.name));
      // A set apply loads (a flow set the kernel already has is never written: no clash to see).
      const added = planForNode(NEW, 'node-1').sets.find((s) => !oldNames.has(s.name) && !s.flow)
        ?.name as string;
      expect(added).toBeDefined();
      inNs(node1().netns, 'ipset', ['create', added, 'hash:ip']);
      try {
        const err = await expectUnchanged(good, added);
        expect(err.message).toMatch(/ipset restore failed at line \d+/);
        expect(err.detail).toContain(`swap ${added}-tmp ${added}`);
        expect(inNs(node1().netns, 'ipset', ['list', '-t', added])).toContain('Type: hash:ip');
      } finally {
        inNs(node1().netns, 'ipset', ['destroy', added]);
      }
    });

    it('with a shadow (no set listing) too: the clash fails at its create, the foreign set left alone', async () => {
      const shadowed = new IptablesBackend({ mode: 'nft' });
      // Its first apply reads the kernel (OLD, in force) and keeps it as its shadow.
      await shadowed.apply(node1(), OLD);
      const oldNames = new Set(planForNode(OLD, 'node-1').sets.map((s) => s.name));
      const added = planForNode(NEW, 'node-1').sets.find((s) => !oldNames.has(s.name) && !s.flow)
        ?.name as string;
      inNs(node1().netns, 'ipset', ['create', added, 'hash:ip']);
      try {
        const err = await expectUnchanged(shadowed, added);
        expect(err.message).toMatch(/ipset restore failed at line \d+/);
        expect(err.detail).toMatch(new RegExp(`> +\\d+ \\| create ${added} `));
        expect(inNs(node1().netns, 'ipset', ['list', '-t', added])).toContain('Type: hash:ip');
      } finally {
        inNs(node1().netns, 'ipset', ['destroy', added]);
      }
    });

    it('changes nothing when a set member is invalid', async () => {
      const broken = new IptablesBackend({
        mode: 'nft',
        transformScript: (stage, s) =>
          stage === 'ipset' ? s.replace(/^(add \S+) \S+$/m, '$1 999.1.1.1/32') : s,
      });
      const err = await expectUnchanged(broken);
      expect(err.detail).toMatch(/> +\d+ \| add \S+ 999\.1\.1\.1\/32/);
    });

    it('then applies the same update for real', async () => {
      await good.apply(node1(), NEW, OLD);
      const r = await lab.probe({ pod: 'b/one' }, [
        { host: lab.address('a/one'), port: 80, protocol: 'TCP' },
      ]);
      const s = await lab.probe({ pod: 'a/two' }, [
        { host: lab.address('a/one'), port: 80, protocol: 'TCP' },
      ]);
      expect([r[0], s[0]]).toEqual([true, false]);
    });

    it('runs exactly the scripts compile prints, on a fresh namespace', async () => {
      const t = node1();
      await good.remove(t);
      const ran = new Map<string, string>();
      const recording = new IptablesBackend({
        mode: 'nft',
        transformScript: (stage, script) => {
          ran.set(stage, script);
          return script;
        },
      });
      await recording.apply(t, NEW);
      const printed = recording.render(NEW, 'node-1').text;
      const sections = printed
        .split(/^# (?:ipset|ip6?tables)\S* .*\n/m)
        .slice(1)
        .map((s) => s.replace(/^#.*\n/gm, ''));
      expect([...ran.keys()].sort()).toEqual(['ip6tables', 'ipset', 'iptables']);
      expect(sections).toEqual([ran.get('ipset'), ran.get('iptables'), ran.get('ip6tables')]);
    });

    it('leaves an empty namespace empty when a first apply fails', async () => {
      const t = lab.target('node-2');
      await good.remove(t);
      const broken = new IptablesBackend({
        mode: 'nft',
        transformScript: (stage, s) => (stage === 'ip6tables' ? injectBeforeLastCommit(s) : s),
      });
      await expect(broken.apply(t, NEW as IR)).rejects.toBeInstanceOf(ApplyError);
      expect(inNs(t.netns, 'iptables-nft-save', [])).not.toMatch(/SY-/);
      expect(inNs(t.netns, 'ip6tables-nft-save', [])).not.toMatch(/SY-/);
      expect(inNs(t.netns, 'ipset', ['list', '-n'])).not.toMatch(/sy-/);
    });
  });
