import { describe, expect, it } from 'vitest';
import { fabricLabs, ownedByPrefix } from '../../src/lab/discover.js';
import { fabricPeerName, labNameError, podSlug, SlugAllocator } from '../../src/lab/names.js';

describe('lab names', () => {
  it('accepts short lower-case names and explains what is wrong with others', () => {
    for (const ok of ['demo', 't-lab1', 'a', '0', 'x'.repeat(20)]) expect(labNameError(ok)).toBeUndefined();
    expect(labNameError('')).toMatch(/empty/);
    expect(labNameError('Demo')).toMatch(/lower-case/);
    expect(labNameError('-demo')).toMatch(/starting and ending/);
    expect(labNameError('demo-')).toMatch(/starting and ending/);
    expect(labNameError('de_mo')).toMatch(/lower-case letters, digits and '-'/);
    expect(labNameError('x'.repeat(21))).toMatch(/too long \(at most 20/);
  });

  it('keeps interface names within 15 characters', () => {
    expect(fabricPeerName('node-1')).toBe('f-node-1');
    for (const n of ['a-very-long-node-name', 'node.with.dots', 'n'.repeat(253)]) {
      expect(fabricPeerName(n).length).toBeLessThanOrEqual(15);
    }
    expect(fabricPeerName('a-very-long-node-name')).not.toBe(fabricPeerName('a-very-long-node-name2'));
  });

  it('shortens long pod slugs with a hash, keeping them distinct', () => {
    const long = 'p'.repeat(200);
    expect(podSlug('x', 'a')).toBe('x-a');
    expect(podSlug('x', long).length).toBeLessThanOrEqual(60);
    expect(podSlug('x', long)).not.toBe(podSlug('x', long + 'q'));
  });

  it('never hands out the same slug twice, nor one that looks like a fabric namespace', () => {
    const slugs = new SlugAllocator(['fabric']);
    const node = slugs.assign('node:x-a', 'x-a');
    const pod = slugs.assign('pod:x/a', 'x-a');
    expect(node).toBe('x-a');
    expect(pod).not.toBe('x-a');
    expect(pod.startsWith('x-a-')).toBe(true);
    expect(slugs.assign('node:fabric', 'fabric')).not.toBe('fabric');
    expect(slugs.assign('pod:x/fabric', 'x-fabric')).not.toMatch(/-fabric$/);
  });
});

describe('finding labs by name', () => {
  it('reads lab names from fabric namespaces', () => {
    expect(fabricLabs(['sy-demo-fabric', 'sy-t-lab1-fabric', 'sy-demo-x-a', 'other'])).toEqual([
      'demo',
      't-lab1',
    ]);
  });

  it('gives each namespace to the lab with the longest matching prefix', () => {
    const all = ['sy-a-node-1', 'sy-a-b-node-1', 'sy-a-b-x-a', 'sy-ab-x', 'sy-bpft-1'];
    expect(ownedByPrefix('a', all, ['a', 'a-b'], new Set())).toEqual(['sy-a-node-1']);
    expect(ownedByPrefix('a-b', all, ['a', 'a-b'], new Set())).toEqual(['sy-a-b-node-1', 'sy-a-b-x-a']);
    // A name another lab's state lists is that lab's, whatever its prefix.
    expect(ownedByPrefix('a-b', all, ['a', 'a-b'], new Set(['sy-a-b-x-a']))).toEqual(['sy-a-b-node-1']);
  });
});
