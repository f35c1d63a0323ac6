/**
 * The refusal hooks lab tests use to make an nftables agent's writes fail in the kernel: while
 * their file exists every kind of write gets one last step nf_tables refuses; without it, nothing.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { refuseWhileFileExists } from '../../src/dataplane/nftables/refusal.js';

const dir = mkdtempSync(join(tmpdir(), 'sy-refusal-'));
const file = join(dir, 'refuse');
const hooks = refuseWhileFileExists(file, 'inet', 'switchyard');

afterAll(() => rmSync(dir, { recursive: true, force: true }));

it('changes nothing while the file is absent', () => {
  expect(hooks.mutateScript('add rule x')).toBe('add rule x');
  expect(hooks.mutateMembers([])).toEqual([]);
  expect(hooks.mutateBatch([])).toEqual([]);
});

it('ends every write with a step on an object that does not exist while the file is there', () => {
  writeFileSync(file, '');
  expect(hooks.mutateScript('add rule x').trim().split('\n').at(-1)).toBe(
    'delete chain inet switchyard refused-missing',
  );
  const members = hooks.mutateMembers([]);
  expect(members).toHaveLength(1);
  expect(members[0]).toMatchObject({ kind: 'set', name: 'refused-missing', add: [] });
  const batch = hooks.mutateBatch([]);
  expect(batch.map((m) => [m.object, m.type])).toEqual([['chain refused-missing', 5]]);
  // The message names the table and the chain (NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME).
  expect(batch[0]?.body.includes(Buffer.from('switchyard\0'))).toBe(true);
  expect(batch[0]?.body.includes(Buffer.from('refused-missing\0'))).toBe(true);
  rmSync(file);
  expect(hooks.mutateBatch([])).toEqual([]);
});
