/**
 * The fabric's XDP program builder without a kernel: the prefilter alone stays what it was, the
 * load balancer comes after it in one program, the code uses only what XDP may call, it carries
 * the node's addresses, and the switch that keeps node ports at tcx only.
 */
import { describe, expect, it } from 'vitest';
import { disassemble } from '../../src/bpf/index.js';
import { addressAsLoaded } from '../../src/dataplane/ebpf/nodeport-programs.js';
import {
  FABRIC_XDP_PROGRAM_NAME,
  fabricXdpProgram,
  fabricXdpProgramName,
} from '../../src/dataplane/ebpf/nodeport-xdp-program.js';
import { nodePortAddressesOf, nodePortXdpFromEnv } from '../../src/dataplane/ebpf/nodeport-xdp.js';
import { PREFILTER_PROGRAM_NAME, prefilterProgram } from '../../src/dataplane/ebpf/prefilter.js';
import { programHash } from '../../src/dataplane/ebpf/program.js';
import type { IR } from '../../src/ir/types.js';

const ADDRESSES = { own: '198.19.128.1', snat: '198.18.255.1' };

/** Index of the first instruction that loads `map`. */
function firstUse(program: ReturnType<typeof fabricXdpProgram>, map: string): number {
  return program.instructions.findIndex((i) => i.mapRef?.name === map);
}

describe('ebpf fabric XDP program', () => {
  it('the prefilter alone keeps its maps, its verdicts and its name', () => {
    const alone = fabricXdpProgram({ prefilter: true });
    expect([...alone.mapNames].sort()).toEqual([...prefilterProgram().mapNames].sort());
    expect(fabricXdpProgramName({ prefilter: true })).toBe(PREFILTER_PROGRAM_NAME);
    expect(disassemble(alone)).not.toContain('np_');
  });

  it('the load balancer comes after the prefilter, in the same program', () => {
    const both = fabricXdpProgram({ prefilter: true, nodePorts: ADDRESSES });
    expect([...both.mapNames].sort()).toEqual([
      'np_affinity',
      'np_backends',
      'np_nat',
      'np_svc',
      'pf_counters',
      'pf_trie',
      'pf_trie6',
    ]);
    const trie = firstUse(both, 'pf_trie');
    expect(trie).toBeGreaterThanOrEqual(0);
    for (const map of ['np_nat', 'np_svc', 'np_backends', 'np_affinity'])
      expect(firstUse(both, map)).toBeGreaterThan(trie);
    expect(fabricXdpProgramName({ prefilter: true, nodePorts: ADDRESSES })).toBe(FABRIC_XDP_PROGRAM_NAME);
  });

  it('without prefilter lists, only the node-port maps', () => {
    const lb = fabricXdpProgram({ prefilter: false, nodePorts: ADDRESSES });
    expect([...lb.mapNames].sort()).toEqual(['np_affinity', 'np_backends', 'np_nat', 'np_svc']);
  });

  it('calls no socket-buffer helper (XDP has none): checksums are fixed in the code', () => {
    const listing = disassemble(fabricXdpProgram({ prefilter: true, nodePorts: ADDRESSES }))
      .split('\n')
      .filter((line) => line.includes('call '))
      .join('\n');
    for (const skbOnly of ['l4_csum_replace', 'l3_csum_replace', 'skb_store_bytes', 'redirect_neigh'])
      expect(listing).not.toContain(skbOnly);
    for (const call of ['map_lookup_elem', 'map_update_elem', 'get_prandom_u32'])
      expect(listing).toContain(call);
  });

  it('is deterministic and carries the refusal address; a new address is new code', () => {
    const a = fabricXdpProgram({ prefilter: false, nodePorts: ADDRESSES });
    expect(programHash(a)).toBe(programHash(fabricXdpProgram({ prefilter: false, nodePorts: ADDRESSES })));
    expect(programHash(a)).not.toBe(
      programHash(fabricXdpProgram({ prefilter: false, nodePorts: { ...ADDRESSES, own: '198.19.128.9' } })),
    );
    expect(a.instructions.map((i) => i.imm >>> 0)).toContain(addressAsLoaded(ADDRESSES.own));
  });

  it('the node-port addresses: refusals to the external address (else the fabric one), source translation to the fabric one', () => {
    const ir = {
      nodes: [
        { name: 'alpha', address: '198.18.255.1', externalAddress: '198.19.128.1' },
        { name: 'beta', address: '198.18.255.2' },
      ],
    } as unknown as IR;
    expect(nodePortAddressesOf(ir, 'alpha')).toEqual({ own: '198.19.128.1', snat: '198.18.255.1' });
    expect(nodePortAddressesOf(ir, 'beta')).toEqual({ own: '198.18.255.2', snat: '198.18.255.2' });
    expect(nodePortAddressesOf(ir, 'gamma')).toBeUndefined();
  });

  it('SWITCHYARD_EBPF_NODEPORT_XDP=0 keeps node ports at tcx only', () => {
    expect(nodePortXdpFromEnv({})).toBe(true);
    expect(nodePortXdpFromEnv({ SWITCHYARD_EBPF_NODEPORT_XDP: '0' })).toBe(false);
    expect(nodePortXdpFromEnv({ SWITCHYARD_EBPF_NODEPORT_XDP: 'off' })).toBe(false);
    expect(nodePortXdpFromEnv({ SWITCHYARD_EBPF_NODEPORT_XDP: '1' })).toBe(true);
  });
});
