/** The iptables fingerprint's consistency mark: a jump into one of our entry chains missing. */
import { describe, expect, it } from 'vitest';
import { missingEntryJumps } from '../../src/dataplane/iptables/fingerprint.js';

const SAVED = `*raw
:PREROUTING ACCEPT [0:0]
:SY-PREFILTER - [0:0]
-A PREROUTING -m comment --comment switchyard -j SY-PREFILTER
COMMIT
*filter
:FORWARD ACCEPT [4:240]
:SY-FORWARD - [0:0]
:SY-FROM-WL - [0:0]
:SY-FW-abc - [0:0]
:SY-FLOWFULL-LOG - [0:0]
-A FORWARD -m comment --comment switchyard -j SY-FORWARD
-A SY-FORWARD -j SY-FROM-WL
-A SY-FROM-WL -i sy-abc -g SY-FW-abc
COMMIT
`;

describe('iptables fingerprint: missing entry jumps', () => {
  it('finds none in a state an apply leaves (chains entered only by some policies may stand alone)', () => {
    expect(missingEntryJumps(SAVED)).toEqual([]);
  });

  it('names the chain whose jump was deleted, with its table', () => {
    const tampered = SAVED.replace('-A FORWARD -m comment --comment switchyard -j SY-FORWARD\n', '');
    expect(missingEntryJumps(tampered)).toEqual(['filter/FORWARD->SY-FORWARD']);
  });

  it('counts only the jump from its own built-in chain, in its own table', () => {
    const moved = SAVED.replace(
      '-A PREROUTING -m comment --comment switchyard -j SY-PREFILTER\n',
      '',
    ).replace(
      '-A SY-FORWARD -j SY-FROM-WL\n',
      '-A SY-FORWARD -j SY-FROM-WL\n-A SY-FORWARD -j SY-PREFILTER\n',
    );
    expect(missingEntryJumps(moved)).toEqual(['raw/PREROUTING->SY-PREFILTER']);
  });

  it('needs every jump of an entry chain entered from several built-in chains', () => {
    const nat = `*nat\n:SY-SERVICES - [0:0]\n-A PREROUTING -m comment --comment switchyard -j SY-SERVICES\nCOMMIT\n`;
    expect(missingEntryJumps(nat)).toEqual(['nat/OUTPUT->SY-SERVICES']);
  });
});
