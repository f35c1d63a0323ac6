/**
 * The policy bench's one endpoint and its rules: N rules that look like a large real policy, not
 * N copies of one rule. Peers are ipBlocks with an except (three disjoint prefixes each), ports
 * vary (single ports and ranges, TCP and UDP), and every tenth rule is a Deny in a global tier
 * ahead of the NetworkPolicy rules. The probe is a TCP SYN to port 80 from inside the first
 * peer's block, a port no rule names: the walk looks at every rule before the default denies it,
 * and the table has to tell that peer's many port ranges apart. The IPv6 policy is the same with
 * every peer block's IPv6 twin (a /123 except a /126 in fd00:5957:100::/48), probed from the
 * first block over IPv6 to the pod's IPv6 address.
 */
import { withDecisionTables } from '../../../calc/index.js';
import { tableSize, type PolicyMode } from '../../../ir/decision-table.js';
import type { IR, IpSet, PolicyRef, Rule, RuleSet } from '../../../ir/types.js';
import { tablePortKey, tableValue } from '../../../dataplane/ebpf/layout.js';
import { encodeTable } from '../../../dataplane/ebpf/table-encoding.js';
import { formatAddress, parseAddress } from '../../../util/ip.js';
import { intToIpv4 } from './frames.js';
import { NODE_ADDRESS, type BenchPod } from './topology.js';
import { BENCH_NODE } from './turns.js';

export const POLICY_ENDPOINT = 'bench/server';
export const POLICY_POD: BenchPod = {
  role: 'pod',
  address: '198.18.0.2',
  addressV6: 'fd00:5957::2',
  hostInterface: 'syb0000000001',
  mac: '02:00:5e:12:00:02',
};
/** Inside the first peer block (198.18.100.0/27 except 198.18.100.4/30). */
export const POLICY_SOURCE = '198.18.100.1';
/** Inside the first IPv6 peer block (fd00:5957:100::/123 except fd00:5957:100::4/126). */
export const POLICY_SOURCE_V6 = 'fd00:5957:100::1';
export type Family = 4 | 6;
export const POLICY_PORT = 80;

const NETWORK_POLICY: PolicyRef = { kind: 'NetworkPolicy', namespace: 'bench', name: 'many-rules' };
const GLOBAL_POLICY: PolicyRef = { kind: 'GlobalPolicy', name: 'bench-deny-tier' };
const MAX_PEERS = 200;
/** 198.18.100.0: peer i's /27 starts at BLOCK_BASE + 32 i (200 peers end in 198.18.124.255). */
const BLOCK_BASE = 0xc612_6400;
/** fd00:5957:100::: peer i's /123 starts at BLOCK_BASE_V6 + 32 i. */
const BLOCK_BASE_V6 = (parseAddress('fd00:5957:100::') as { value: bigint }).value;

/** Distinct peers for `rules` rules: about ten rules per peer, at most MAX_PEERS. */
function peerCount(rules: number): number {
  return Math.min(MAX_PEERS, Math.max(1, Math.ceil(rules / 10)));
}

/** Peer i: its /27 (IPv6: /123) minus the /30 (/126) at offset 4, as the disjoint prefixes calc would give. */
function peerSets(count: number, family: Family): IpSet[] {
  return Array.from({ length: count }, (_, i) => {
    const id = `sy-bpol-${String(i).padStart(3, '0')}`;
    if (family === 6) {
      const at = (offset: number): string =>
        formatAddress({ family: 6, value: BLOCK_BASE_V6 + BigInt(i * 32 + offset) });
      return {
        id,
        description: `bench peers ${at(0)}/123 except ${at(4)}/126`,
        cidrs: [`${at(0)}/126`, `${at(8)}/125`, `${at(16)}/124`],
      };
    }
    const base = BLOCK_BASE + i * 32;
    return {
      id,
      description: `bench peers ${intToIpv4(base)}/27 except ${intToIpv4(base + 4)}/30`,
      cidrs: [`${intToIpv4(base)}/30`, `${intToIpv4(base + 8)}/29`, `${intToIpv4(base + 16)}/28`],
    };
  });
}

/** Rule j's ports: 1000–5999 spread by j, every fifth a range of ten; never POLICY_PORT. */
function portsOf(j: number): { first: number; last: number }[] {
  const first = 1000 + ((j * 7) % 5000);
  return [{ first, last: j % 5 === 0 ? first + 9 : first }];
}

function rulesOf(count: number, sets: readonly IpSet[]): { global: Rule[]; kubernetes: Rule[] } {
  const global: Rule[] = [];
  const kubernetes: Rule[] = [];
  for (let j = 0; j < count; j++) {
    const peerSet = (sets[j % sets.length] as IpSet).id;
    const protocol = j % 7 === 3 ? 'UDP' : 'TCP';
    if (j % 10 === 0)
      global.push({
        id: `gp:bench-deny-tier/ingress/${global.length}`,
        policy: GLOBAL_POLICY,
        ruleIndex: global.length,
        action: 'deny',
        protocol,
        ports: portsOf(j + 2500),
        peerSet,
      });
    else
      kubernetes.push({
        id: `np:bench/many-rules/ingress/${kubernetes.length}`,
        policy: NETWORK_POLICY,
        ruleIndex: kubernetes.length,
        action: 'allow',
        protocol,
        ports: portsOf(j),
        peerSet,
      });
  }
  return { global, kubernetes };
}

/**
 * One endpoint on the bench node whose ingress has `rules` rules (0: the default deny alone),
 * in `mode` (table: with its decision table when it fits the bound, as calc builds it).
 */
export function policyIR(rules: number, mode: PolicyMode, family: Family = 4): IR {
  const sets = peerSets(peerCount(rules), family);
  const { global, kubernetes } = rulesOf(rules, sets);
  const side = (direction: 'ingress' | 'egress'): RuleSet => ({
    endpoint: POLICY_ENDPOINT,
    direction,
    globalRules: direction === 'ingress' ? global : [],
    kubernetesRules: direction === 'ingress' ? kubernetes : [],
    kubernetesDefault: direction === 'ingress' ? 'deny' : 'allow',
    globalPolicies: direction === 'ingress' && global.length > 0 ? [GLOBAL_POLICY] : [],
    kubernetesPolicies: direction === 'ingress' ? [NETWORK_POLICY] : [],
  });
  const ir: IR = {
    version: 1,
    nodes: [{ name: BENCH_NODE, address: NODE_ADDRESS }],
    endpoints: [
      {
        id: POLICY_ENDPOINT,
        namespace: 'bench',
        name: 'server',
        node: BENCH_NODE,
        // IPv4 as it always was; the IPv6 policy's pod is dual-stack.
        addresses: family === 6 ? [POLICY_POD.address, POLICY_POD.addressV6 as string] : [POLICY_POD.address],
        labels: { app: 'server' },
        namespaceLabels: {},
        ports: [],
        hostInterface: POLICY_POD.hostInterface,
      },
    ],
    ipSets: rules === 0 ? [] : sets,
    ipPortSets: [],
    ruleSets: [side('egress'), side('ingress')],
    services: [],
    prefilters: [],
  };
  return mode === 'table' ? withDecisionTables(ir) : ir;
}

/**
 * `ir` with one rule's port moved: the smallest policy edit, for the apply time of a change.
 * The moved port stays away from POLICY_PORT, so the probe's verdict does not change.
 */
export function withOneRuleChanged(rules: number, mode: PolicyMode, family: Family = 4): IR {
  const ir = policyIR(rules, 'walk', family);
  const ingress = ir.ruleSets.find((rs) => rs.direction === 'ingress') as RuleSet;
  const [first, ...rest] = ingress.kubernetesRules;
  if (first) ingress.kubernetesRules = [{ ...first, ports: [{ first: 6001, last: 6001 }] }, ...rest];
  return mode === 'table' ? withDecisionTables(ir) : ir;
}

/**
 * The ingress table's size, or why there is none, for the notes: entries as calc builds them, and
 * what the eBPF backend loads of them (trie rows and their bytes; slots do not change the count).
 */
export function describeTable(ir: IR): string {
  const ingress = ir.ruleSets.find((rs) => rs.direction === 'ingress');
  if (ingress?.table) {
    const size = tableSize(ingress.table);
    const encoded = encodeTable(ingress.table, () => 1);
    const trie = encoded.ok
      ? `; eBPF trie ${encoded.table.entries.length} rows, ${((encoded.table.entries.length * (tablePortKey.size + tableValue.size)) / 1024).toFixed(0)} KiB of keys and values`
      : '';
    return `${size.entries} entries, ${size.prefixes} prefixes, ${ingress.table.classes.length} classes${trie}`;
  }
  if (ingress?.tableOverflow)
    return `over the bound (${ingress.tableOverflow.entries} entries > ${ingress.tableOverflow.maxEntries}): walked`;
  return 'no table';
}
