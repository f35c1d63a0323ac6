/**
 * A network partition for one agent: two cgroup_skb programs on the agent's cgroup drop its TCP
 * traffic to and from 127.0.0.1:<port> (etcd), everything else passes. Packets vanish silently,
 * so the agent sees what a real partition looks like (stalled connections, connect timeouts)
 * rather than errors, and nothing in the root network namespace is touched: the programs only
 * run for sockets created inside that cgroup.
 *
 * The links are pinned under <PIN_ROOT>/<lab>/partition/<node>/ because the CLI that cuts a node
 * off exits right away; the pins are what keeps the partition in force. `lab down` removing the
 * lab's pin directory therefore heals every partition of the lab too.
 */
import { existsSync, renameSync, rmdirSync, rmSync } from 'node:fs';
import { join, resolve, sep } from 'node:path';
import {
  Assembler,
  attachCgroup,
  Link,
  Program,
  R0,
  R1,
  R2,
  R3,
  R4,
  R6,
  R10,
  VerifierError,
  type AssembledProgram,
} from '../bpf/index.js';
import { cgroup2Mount } from '../netns/index.js';
import { LabError } from './errors.js';
import { CGROUP_DIR, checkLabName, PIN_ROOT } from './names.js';
import { IPPROTO_TCP } from '../util/protocols.js';

type Direction = 'egress' | 'ingress';
const DIRECTIONS: readonly Direction[] = ['egress', 'ingress'];

/** bpffs refuses names with a dot (reserved by the kernel), so nodes and staged pins have none. */
const NODE_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

/** cgroup_skb verdicts. */
const DROP = 0;
const PASS = 1;

/** 127.0.0.1 as the little-endian u32 an ldxw of the four address bytes yields. */
const LOOPBACK_LE = 0x0100007f;

/** Where an ldxh of a big-endian u16 on this little-endian host puts its bytes. */
function bytesSwapped16(value: number): number {
  return ((value & 0xff) << 8) | (value >> 8);
}

/**
 * The filter for one direction. cgroup_skb sees the packet from the IPv4/IPv6 header on (no L2),
 * in both directions. bpf_skb_load_bytes instead of direct packet access: it handles non-linear
 * skbs and needs no bounds dance for the variable IHL offset.
 */
function partitionProgram(direction: Direction, port: number): AssembledProgram {
  const ip = -24; // 20-byte IPv4 header without options
  const ports = -4; // source and destination port
  // Egress drops what the agent sends to etcd; ingress what etcd sends back, so ACKs don't get
  // through either and both sides' retransmission timers keep running, as on a dead network.
  const addressOffset = direction === 'egress' ? 16 : 12; // daddr : saddr
  const portOffset = direction === 'egress' ? 2 : 0; // dport : sport
  return (
    new Assembler()
      .mov64(R6, R1)
      .mov64(R2, 0)
      .stackAddress(R3, ip)
      .mov64(R4, 20)
      .call('skb_load_bytes')
      .jne(R0, 0, 'pass') // shorter than an IPv4 header: not ours
      .ldxb(R2, R10, ip)
      // Checking the version nibble rather than skb->protocol also covers v4-mapped IPv6 sockets.
      .mov64(R3, R2)
      .rsh64(R3, 4)
      .jne(R3, 4, 'pass')
      .and64(R2, 0x0f)
      .jlt(R2, 5, 'pass')
      .ldxb(R3, R10, ip + 9)
      .jne(R3, IPPROTO_TCP, 'pass')
      // A non-first fragment carries payload where the ports would be; the 13-bit offset, big-endian.
      .ldxh(R3, R10, ip + 6)
      .jset(R3, bytesSwapped16(0x1fff), 'pass')
      .ldxw(R3, R10, ip + addressOffset)
      .jne(R3, LOOPBACK_LE, 'pass')
      // IP options push the TCP header out: it starts at IHL * 4.
      .lsh64(R2, 2)
      .mov64(R1, R6)
      .stackAddress(R3, ports)
      .mov64(R4, 4)
      .call('skb_load_bytes')
      .jne(R0, 0, 'pass')
      .ldxh(R3, R10, ports + portOffset)
      .jne(R3, bytesSwapped16(port), 'pass')
      .exitWith(DROP)
      .label('pass')
      .exitWith(PASS)
      .assemble()
  );
}

function loadProgram(direction: Direction, port: number): Program {
  try {
    return Program.load({
      name: `sy_part_${direction}`,
      type: 'cgroup_skb',
      expectedAttachType: direction === 'egress' ? 'cgroup_inet_egress' : 'cgroup_inet_ingress',
      instructions: partitionProgram(direction, port),
    });
  } catch (err) {
    // The message holds only the reason and an excerpt; whoever debugs this needs the whole log.
    if (err instanceof VerifierError) err.message += `\nverifier log:\n${err.log}`;
    throw err;
  }
}

function nodeDir(lab: string, node: string): string {
  checkLabName(lab);
  if (!NODE_NAME.test(node))
    throw new LabError(`invalid node name '${node}': use letters, digits, '_' and '-' (max 64)`);
  return join(PIN_ROOT, lab, 'partition', node);
}

/**
 * Only the lab's own cgroups: attached higher up (the cgroup2 root, say), the programs would cut
 * every process on the machine off from etcd.
 */
function checkCgroup(lab: string, cgroup: string): string {
  const labRoot = join(cgroup2Mount(), CGROUP_DIR, lab);
  const path = resolve(cgroup);
  if (!path.startsWith(labRoot + sep))
    throw new LabError(`cgroup '${cgroup}' is not below the lab's cgroup ${labRoot}: refusing to attach`);
  if (!existsSync(path)) throw new LabError(`cgroup '${cgroup}' does not exist`);
  return path;
}

/** Drops the node's TCP traffic with 127.0.0.1:port until heal(); a second call replaces the first. */
export async function cutOff(opts: {
  lab: string;
  node: string;
  cgroup: string;
  port: number;
}): Promise<void> {
  const dir = nodeDir(opts.lab, opts.node);
  const cgroup = checkCgroup(opts.lab, opts.cgroup);
  if (!Number.isInteger(opts.port) || opts.port < 1 || opts.port > 65535)
    throw new LabError(`invalid port ${opts.port}`);
  for (const direction of DIRECTIONS) {
    const program = loadProgram(direction, opts.port);
    try {
      const link = attachCgroup(program, {
        cgroup,
        attachType: direction === 'egress' ? 'cgroup_inet_egress' : 'cgroup_inet_ingress',
      });
      try {
        // Pin beside, then rename over: an earlier partition's link is replaced in one step (its
        // pin was the last reference, so it detaches) and the node is never briefly reachable.
        const final = join(dir, direction);
        const staged = `${final}-staged`;
        rmSync(staged, { force: true });
        link.pin(staged);
        renameSync(staged, final);
      } finally {
        // Unpinned (an error above), closing detaches it; a direction pinned before the error
        // stays in force until heal().
        link.close();
      }
    } finally {
      program.close();
    }
  }
}

/** Lifts the partition; returns whether the node was cut off. */
export async function heal(opts: { lab: string; node: string }): Promise<boolean> {
  const dir = nodeDir(opts.lab, opts.node);
  let wasCut = false;
  for (const direction of DIRECTIONS) {
    const path = join(dir, direction);
    if (!existsSync(path)) continue;
    wasCut = true;
    // Releasing the last reference detaches from a kernel work queue, a moment later; an explicit
    // detach takes effect before heal() returns, and even if another process holds the link open.
    try {
      const link = Link.fromPin(path);
      try {
        link.detach();
      } finally {
        link.close();
      }
    } finally {
      rmSync(path, { force: true });
    }
  }
  for (const empty of [dir, join(PIN_ROOT, opts.lab, 'partition')]) {
    try {
      rmdirSync(empty);
    } catch {
      // Not empty (other nodes, a stray staged pin) or already gone: leave it.
    }
  }
  return wasCut;
}

/** Whether a partition of the node is pinned (it detaches by itself if its cgroup is removed). */
export function isCutOff(lab: string, node: string): boolean {
  const dir = nodeDir(lab, node);
  return DIRECTIONS.some((direction) => existsSync(join(dir, direction)));
}
