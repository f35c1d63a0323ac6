/**
 * `switchyard compile --backend ebpf`: the maps with a summary of their contents, then every
 * generated program as a disassembly listing, exactly the instructions a first apply on an empty
 * node loads (later applies keep the set indices and counter slots already in use, so their
 * numbers may differ). Pure: no kernel, maps appear by name.
 */
import { disassemble } from '../../bpf/index.js';
import type { IR, RuleSet } from '../../ir/types.js';
import { MAP } from './layout.js';
import { COUNTER_SLOTS, CT_CAPACITY, MAP_PURPOSE, MAP_SPECS } from './maps.js';
import { hookKey, isIpv4, nodeView, parseSlotKey, type Allocation, type NodeView } from './node.js';
import { hookFor } from './paths.js';
import { isIpv6Cidr, prefilterEntries, prefilterProgram, PREFILTER_PROGRAM_NAME } from './prefilter.js';
import { describeNodePorts } from './nodeport-sync.js';
import { NODEPORT_PROGRAM_NAMES, nodePortProgram } from './nodeport-programs.js';
import { policyProgram } from './program.js';
import { describeRule } from './rules.js';
import { allocateWithTables, TABLE_HOOKS } from './tables.js';

const SHOWN = 6;

function some(items: readonly string[]): string {
  if (items.length === 0) return '(empty)';
  const head = items.slice(0, SHOWN).join(', ');
  return items.length > SHOWN ? `${head}, … (+${items.length - SHOWN} more)` : head;
}

function indent(text: string, by = '    '): string {
  // One pass over the text (a compile of 10,000 pods indents ~400 MB of disassembly).
  return text.replace(/^(?=.)/gm, by);
}

function mapLines(view: NodeView, alloc: Allocation): string[] {
  const out = ['# maps (one set per node, pinned under <scope>/<node>/maps/)'];
  const row = (name: string, type: string, key: number, value: number, max: string): string =>
    `#   ${name.padEnd(12)} ${type.padEnd(13)} key ${String(key).padStart(2)} B  value ${String(value).padStart(2)} B  max ${max.padEnd(8)} ${MAP_PURPOSE[name] ?? ''}`;
  for (const [name, spec] of Object.entries(MAP_SPECS)) {
    const max =
      name === MAP.counters
        ? String(Math.max(COUNTER_SLOTS, Object.keys(alloc.slots).length + 1))
        : name === MAP.conntrack
          ? String(CT_CAPACITY)
          : String(spec.maxEntries);
    out.push(row(name, spec.type, spec.key.size, spec.value.size, max));
  }
  out.push(row(MAP.tables, 'array_of_maps', 4, 4, String(TABLE_HOOKS)));

  out.push('#', '# IP sets in ipsets (set index: members)');
  if (view.ipSets.length === 0) out.push('#   (none)');
  for (const s of view.ipSets) {
    const v6 = s.cidrs.filter((c) => !isIpv4(c)).length;
    out.push(
      `#   set ${alloc.sets[s.id]} ${s.id} (${s.description}): ${s.cidrs.length} prefixes${v6 ? ` (${v6} IPv6)` : ''}: ${some(s.cidrs)}`,
    );
  }
  out.push('#', '# IP-port sets in portsets');
  if (view.ipPortSets.length === 0) out.push('#   (none)');
  for (const s of view.ipPortSets) {
    const members = s.members.map((m) =>
      isIpv4(m.address) ? `${m.address}:${m.port}` : `[${m.address}]:${m.port}`,
    );
    out.push(
      `#   set ${alloc.portSets[s.id]} ${s.id} ${s.protocol} (${s.description}): ${members.length} members: ${some(members)}`,
    );
  }
  out.push('#', '# counter slots');
  for (const [key, slot] of Object.entries(alloc.slots)) {
    const owner = parseSlotKey(key);
    out.push(`#   ${String(slot).padStart(5)}  ${owner.endpoint} ${owner.direction}  ${owner.rule}`);
  }
  out.push(
    '#',
    '# prefilter lists in pf_trie (IPv4) and pf_trie6 (IPv6), XDP on the fabric-facing interface',
  );
  if (view.prefilters.length === 0) out.push('#   (none: no XDP program on this node)');
  else {
    const entries = [...prefilterEntries(view.prefilters).keys()];
    const v6 = entries.filter(isIpv6Cidr).length;
    for (const l of view.prefilters)
      out.push(`#   list ${l.index} ${l.name}: ${l.cidrs.length} prefixes: ${some(l.cidrs)}`);
    out.push(`#   trie entries after merging overlaps: ${entries.length - v6} IPv4, ${v6} IPv6`);
  }
  return out;
}

/** What a table-mode program's table holds, in place of the rules it no longer walks. */
function tableLines(rs: RuleSet, alloc: Allocation, entries: number | undefined): string[] {
  const index = alloc.tables?.[hookKey(rs.endpoint, rs.direction)];
  if (index === undefined || !rs.table) return [];
  const v6 = rs.table.prefixes.filter((p) => !isIpv4(p.cidr)).length;
  return [
    `#   decision table at policy[${index}]: ${rs.table.prefixes.length - v6} IPv4 and ${v6} IPv6 peer prefixes, ${rs.table.classes.length} classes, ` +
      `${entries ?? '?'} trie entries (port ranges as prefixes); the rules below are not walked`,
  ];
}

function programLines(rs: RuleSet, alloc: Allocation, ifname: string, entries?: number): string[] {
  const g = policyProgram(rs, alloc);
  const count = g.program.instructions.length;
  const out = [
    '',
    `# program ${g.name}: ${rs.endpoint} ${rs.direction} policy, tcx ${hookFor(rs.direction)} on ${ifname} (${count} instructions, maps ${g.maps.join(', ')})`,
    ...tableLines(rs, alloc, entries),
    `#   global tier: ${rs.globalRules.length === 0 ? '(none)' : ''}`,
    ...rs.globalRules.map((r) => `#     ${describeRule(r)}`),
    `#   kubernetes tier: ${rs.kubernetesRules.length === 0 ? '(none)' : ''}`,
    ...rs.kubernetesRules.map((r) => `#     ${describeRule(r)}`),
    `#   default: ${rs.kubernetesDefault}`,
    indent(disassemble(g.program)),
  ];
  return out;
}

export function renderNode(ir: IR, node: string): string {
  const view = nodeView(ir, node);
  const { tables, alloc } = allocateWithTables(view, undefined);
  const ifnames = new Map(view.endpoints.map((e) => [e.id, e.hostInterface]));
  const lines = [
    `# eBPF dataplane of node ${node}: ${view.endpoints.length} endpoints, ${view.ruleSets.length} policy programs` +
      `${view.prefilters.length ? ', 1 XDP prefilter' : ''} (generated at run time, loaded through bpf(2))`,
    '# pins: /sys/fs/bpf/switchyard/<scope>/<node>/{maps,links}/',
    '#',
    ...mapLines(view, alloc),
  ];
  for (const f of tables.fallbacks)
    lines.push(`# ${f.endpoint} ${f.direction}: walks its rules instead of its table (${f.reason})`);
  for (const rs of view.ruleSets) {
    const entries = tables.tabled.get(hookKey(rs.endpoint, rs.direction))?.entries.length;
    // One string a program, not one a line: millions of short strings cost more in GC than text.
    lines.push(programLines(rs, alloc, ifnames.get(rs.endpoint) ?? '?', entries).join('\n'));
  }
  if (view.prefilters.length > 0) {
    const program = prefilterProgram();
    lines.push(
      '',
      `# program ${PREFILTER_PROGRAM_NAME}: XDP on the fabric-facing interface (${program.instructions.length} instructions)`,
      indent(disassemble(program)),
    );
  }
  const nodePorts = describeNodePorts(ir, node);
  if (nodePorts.addresses)
    for (const hook of ['ingress', 'egress'] as const) {
      const program = nodePortProgram(hook, nodePorts.addresses);
      nodePorts.lines.push(
        `# program ${NODEPORT_PROGRAM_NAMES[hook]}: tcx ${hook} on the fabric interface (${program.instructions.length} instructions)`,
        indent(disassemble(program)),
      );
    }
  lines.push(...nodePorts.lines);
  return lines.join('\n') + '\n';
}
