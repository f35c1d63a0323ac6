import { describe, expect, it } from 'vitest';
import { flowRow, FollowPrinter, hubbleFlow } from '../../src/cli/flow-format.js';
import { sampleFlow } from '../support/flows.js';

const flow = sampleFlow;

describe('flows output', () => {
  it('names pods at both ends, addresses for the rest', () => {
    const row = flowRow(flow());
    expect(row.slice(4, 8)).toEqual(['outside/client', 'shop/db:5432', 'shop/db ingress', 'DENY']);
    const outside = flowRow(flow({ src: '198.19.128.9', source: undefined }));
    expect(outside[4]).toBe('198.19.128.9');
  });

  it('--follow: aligned rows; a flow again only when its counts moved, with what was added', () => {
    const p = new FollowPrinter(['node-1', 'node-2']);
    const lines = [p.header()];
    for (const f of [
      flow(),
      flow({ process: { pid: 7, comm: 'node', cgroupId: '1', pod: 'outside/client' } }), // no count moved
      flow({ connections: 5, packets: 5, bytes: 370 }),
      flow({ src: '198.19.128.9', source: undefined, key: 'other', rule: 'shop/db/ingress/default' }),
    ]) {
      const u = p.update(f);
      if (u) lines.push(p.row(u));
    }
    expect(lines).toHaveLength(4);
    expect(lines[2]).toMatch(/\s\+3\s+\+3\s+\+222\s/);
    // Every column starts where the header's does.
    const header = lines[0] as string;
    for (const name of ['SOURCE', 'DESTINATION', 'VERDICT', 'ENDPOINT', 'DECIDED BY']) {
      const at = header.indexOf(name);
      for (const l of lines.slice(1)) expect(l[at - 1]).toBe(' ');
      for (const l of lines.slice(1)) expect(l[at]).not.toBe(' ');
    }
  });

  it('-o jsonpb: Hubble field names', () => {
    expect(hubbleFlow(flow())).toMatchObject({
      flow: {
        time: '2026-12-05T04:59:00.125Z',
        verdict: 'DROPPED',
        IP: { source: '198.18.0.2', destination: '198.18.0.4', ipVersion: 'IPv4' },
        l4: { TCP: { destination_port: 5432 } },
        source: { namespace: 'outside', pod_name: 'client', labels: ['k8s:app=client'] },
        destination: { namespace: 'shop', pod_name: 'db', labels: ['k8s:app=db', 'k8s:tier=data'] },
        traffic_direction: 'INGRESS',
        ingress_denied_by: [{ name: 'protect-db', kind: 'GlobalPolicy' }],
      },
      node_name: 'node-2',
      switchyard: { rule: 'gp:protect-db/ingress/1', connections: 2 },
    });
    const allowed = hubbleFlow(
      flow({ verdict: 'allow', source: undefined, policy: 'NetworkPolicy shop/db-in' }),
    );
    expect(allowed).toMatchObject({
      flow: {
        verdict: 'FORWARDED',
        source: { labels: ['reserved:world'] },
        ingress_allowed_by: [{ namespace: 'shop', name: 'db-in', kind: 'NetworkPolicy' }],
      },
    });
  });

  it('IPv6: addresses bracketed before a port, whole in --follow, IPv6 and ICMPv6 in jsonpb', () => {
    const v6 = flow({
      src: 'fd00:5957:0:1::ffff',
      sport: 65535,
      dst: 'fd00:5957::4',
      source: undefined,
      destination: undefined,
    });
    const row = flowRow(v6);
    expect(row.slice(4, 6)).toEqual(['[fd00:5957:0:1::ffff]:65535', '[fd00:5957::4]:5432']);
    expect(flowRow(flow({ src: 'fd00:5957::2', source: undefined }))[4]).toBe('fd00:5957::2');
    const p = new FollowPrinter(['node-1']);
    const line = p.row(p.update(v6) ?? { flow: v6 });
    expect(line).toContain('[fd00:5957:0:1::ffff]:65535');
    expect(line).toContain('[fd00:5957::4]:5432');
    expect(line).not.toContain('…');
    expect(hubbleFlow(v6)).toMatchObject({
      flow: {
        IP: { source: 'fd00:5957:0:1::ffff', destination: 'fd00:5957::4', ipVersion: 'IPv6' },
        l4: { TCP: { source_port: 65535, destination_port: 5432 } },
      },
    });
    expect(hubbleFlow({ ...v6, protocol: 'ICMP', sport: 0, dport: 0 })).toMatchObject({
      flow: { l4: { ICMPv6: {} } },
    });
    expect(hubbleFlow(flow({ protocol: 'ICMP' }))).toMatchObject({ flow: { l4: { ICMPv4: {} } } });
  });
});
