/**
 * Flow records name the pods at both ends by address: the peer directory and the drop tracer look
 * them up in one map per endpoint list of the IR (the incremental calculation hands the same list
 * while no endpoint changes), made from the IR's own endpoint objects.
 */
import { describe, expect, it } from 'vitest';
import { endpointsByAddress, PeerDirectory } from '../../src/observe/peers.js';
import { compileIR, modelOf, namespace, pod } from '../support/manifests.js';

describe('pods by address', () => {
  const ir = compileIR(
    modelOf([
      namespace('shop', { team: 'a' }),
      pod('shop', 'web', { ip: '198.18.0.10', labels: { app: 'web' }, node: 'node-1' }),
      pod('shop', 'db', { ip: '198.18.0.11', labels: { app: 'db' }, node: 'node-1' }),
    ]),
  );

  it('names the pod of an address from the IR, and nothing for an address no pod has', () => {
    const peers = new PeerDirectory(ir);
    expect(peers.peerOf('198.18.0.10')).toEqual({
      pod: 'shop/web',
      namespace: 'shop',
      name: 'web',
      labels: { app: 'web' },
    });
    expect(peers.peerOf('198.18.9.9')).toBeUndefined();
    expect(new PeerDirectory(undefined).peerOf('198.18.0.10')).toBeUndefined();
  });

  it('makes one map for an endpoint list, whichever IR holds it, and another for a new list', () => {
    const index = endpointsByAddress(ir);
    expect(endpointsByAddress({ ...ir, ruleSets: [] })).toBe(index);
    expect(index.get('198.18.0.11')).toBe(ir.endpoints.find((e) => e.id === 'shop/db'));
    const moved = { ...ir, endpoints: ir.endpoints.filter((e) => e.id !== 'shop/db') };
    expect(endpointsByAddress(moved)).not.toBe(index);
    expect(endpointsByAddress(moved).has('198.18.0.11')).toBe(false);
  });
});
