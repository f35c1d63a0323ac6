/** The iptables fingerprint's consistency mark: our chains that nothing enters. */
import { describe, expect, it } from 'vitest';
import { unreferencedChains } from '../../src/dataplane/iptables/fingerprint.js';

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
-A FORWARD -m comment --comment switchyard -j SY-FORWARD
-A SY-FORWARD -j SY-FROM-WL
-A SY-FROM-WL -i sy-abc -g SY-FW-abc
COMMIT
`;

describe('iptables fingerprint: unreferenced chains', () => {
  it('finds none in a state an apply leaves', () => {
    expect(unreferencedChains(SAVED)).toEqual([]);
  });

  it('names the chain whose jump was deleted, with its table', () => {
    const tampered = SAVED.replace('-A FORWARD -m comment --comment switchyard -j SY-FORWARD\n', '');
    expect(unreferencedChains(tampered)).toEqual(['filter/SY-FORWARD']);
  });

  it('counts a reference only within its own table', () => {
    const moved = SAVED.replace(
      '-A PREROUTING -m comment --comment switchyard -j SY-PREFILTER\n',
      '',
    ).replace(
      '-A SY-FORWARD -j SY-FROM-WL\n',
      '-A SY-FORWARD -j SY-FROM-WL\n-A SY-FORWARD -j SY-PREFILTER\n',
    );
    expect(unreferencedChains(moved)).toEqual(['raw/SY-PREFILTER']);
  });
});
