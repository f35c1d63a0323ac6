/** The README tour test's reading of console blocks and its comparison by shape. */
import { describe, expect, it } from 'vitest';
import { consoleBlocks, describeMismatch, matchShape, shapeOf } from '../support/console-blocks.js';

const MD = [
  '# Title', //                                   1
  '',
  '```sh',
  'bash scripts/demo.sh',
  '```',
  '',
  '```console', //                                7
  '$ ./bin/switchyard validate examples/',
  'ok: 7 file(s): 7 namespaces',
  '$ ./bin/switchyard lab status',
  '```',
  '',
  '<!-- tour: skip (serves until Ctrl-C) -->',
  '',
  '```console', //                                15
  '$ ./bin/switchyard console',
  '```',
].join('\n');

describe('consoleBlocks', () => {
  it('reads console blocks only, with their lines, commands, outputs and skip marks', () => {
    const blocks = consoleBlocks(MD);
    expect(blocks).toEqual([
      {
        line: 7,
        commands: [
          {
            line: 8,
            command: './bin/switchyard validate examples/',
            expected: ['ok: 7 file(s): 7 namespaces'],
          },
          { line: 10, command: './bin/switchyard lab status', expected: [] },
        ],
      },
      {
        line: 15,
        skip: 'serves until Ctrl-C',
        commands: [{ line: 16, command: './bin/switchyard console', expected: [] }],
      },
    ]);
  });
});

describe('matchShape', () => {
  it('masks numbers, collapses column spacing and shortens rules', () => {
    expect(shapeOf('node-1  198.18.0.2     pid 21100   (719 ms)')).toBe(
      shapeOf('node-2  198.18.0.13  pid 7  (5 ms)'),
    );
    expect(shapeOf('----  ---------')).toBe('--  --');
    expect(matchShape(['a  b', '--  --', 'x  1'], ['a     b', '----  -', 'x     22'])).toBeUndefined();
  });

  it('tells a changed verdict word or symbol', () => {
    expect(matchShape(['x  .  X'], ['x  .  -'])).toEqual({ expectedIndex: 0, actualIndex: 0 });
    expect(matchShape(['TCP port 5432: DENIED'], ['TCP port 5432: ALLOWED'])).toBeDefined();
  });

  it('counts rows: one missing or extra fails', () => {
    expect(matchShape(['h', 'r1', 'r2'], ['h', 'r1'])).toEqual({ expectedIndex: 2, actualIndex: 2 });
    expect(matchShape(['h', 'r1'], ['h', 'r1', 'r2'])).toEqual({ expectedIndex: 2, actualIndex: 2 });
  });

  it('lets … stand for any text in a line, or for any lines', () => {
    expect(
      matchShape(
        ['lab demo: removed 3 namespaces, processes …, state'],
        ['lab demo: removed 9 namespaces, processes 1,2,3, state'],
      ),
    ).toBeUndefined();
    expect(matchShape(['head', '…', 'tail'], ['head', 'tail'])).toBeUndefined();
    expect(matchShape(['head', '…', 'tail'], ['head', 'a', 'b', 'tail'])).toBeUndefined();
    expect(matchShape(['head', '…', 'tail'], ['head', 'a'])).toBeDefined();
  });

  it('ignores trailing blank lines', () => {
    expect(matchShape(['a', ''], ['a'])).toBeUndefined();
  });
});

describe('describeMismatch', () => {
  it('names the README line of the command and of the first line that differs', () => {
    const [block] = consoleBlocks(MD);
    const cmd = block?.commands[0];
    if (!cmd) throw new Error('no command');
    const actual = ['ok: 6 file(s): 6 namespaces, 0 services'];
    const at = matchShape(cmd.expected, actual);
    if (!at) throw new Error('expected a mismatch');
    const text = describeMismatch('README.md', cmd, actual, at);
    expect(text.split('\n').slice(0, 3)).toEqual([
      'README.md:8: `$ ./bin/switchyard validate examples/` printed output of another shape (numbers masked, spacing collapsed)',
      '  README.md:9: expected  ok: 7 file(s): 7 namespaces',
      '               actual    ok: 6 file(s): 6 namespaces, 0 services',
    ]);
  });
});
