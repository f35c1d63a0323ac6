/** `lab status` and `lab up`'s pod table: both addresses of a dual-stack pod, `-` for a lab without IPv6. */
import { describe, expect, it } from 'vitest';
import { podTable } from '../../src/cli/lab.js';
import type { LabPod } from '../../src/lab/topology.js';

function labPod(over: Partial<LabPod> = {}): LabPod {
  return {
    id: 'shop/db',
    namespace: 'shop',
    name: 'db',
    node: 'node-1',
    slug: 'p-shop-db',
    netns: 'sy-demo-p-shop-db',
    address: '198.18.0.2',
    hostInterface: 'sy-h1',
    ports: [{ port: 5432, protocol: 'TCP' }],
    ...over,
  };
}

describe('lab pod table', () => {
  it('shows the IPv6 address in its own column, whole, and - for a pod without one', () => {
    const lines = podTable([
      labPod({ addressV6: 'fd00:5957:0:ff::ffff' }),
      labPod({ id: 'shop/old', name: 'old', address: '198.18.0.3' }),
    ])
      .split('\n')
      .filter((l) => !/^[-\s]+$/.test(l));
    const header = lines[0] as string;
    expect(header).toMatch(/^POD\s+NODE\s+ADDRESS\s+IPV6 ADDRESS\s+NETNS\s+PORTS$/);
    const at = header.indexOf('IPV6 ADDRESS');
    expect(lines[1]?.slice(at).split(/\s+/)[0]).toBe('fd00:5957:0:ff::ffff');
    expect(lines[2]?.slice(at).split(/\s+/)[0]).toBe('-');
  });
});
