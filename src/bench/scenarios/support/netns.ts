/**
 * Throwaway namespaces for one scenario run, named `sy-bench-<tag>-<role>`: created empty (with
 * loopback up), wired with veths made directly between two of them (never in the root namespace),
 * and deleted in a `finally`. Anything a backend installed inside dies with its namespace; BPF
 * pins are the caller's to remove.
 */
import { createNetns, deleteNetns, ipBatch, writeSysctls } from '../../../netns/index.js';

export interface VethEnd {
  role: string;
  ifname: string;
  mac: string;
  /** CIDR to assign, if any. */
  address?: string;
}

/** A short tag unique to this process and scenario, so parallel runs never share names. */
export function benchTag(scenario: string): string {
  return `${scenario}${process.pid % 100_000}`;
}

export class BenchNetns {
  private readonly created: string[] = [];

  constructor(readonly tag: string) {}

  name(role: string): string {
    return `sy-bench-${this.tag}-${role}`;
  }

  async create(roles: readonly string[]): Promise<void> {
    const names = roles.map((r) => this.name(r));
    // A run killed earlier may have left namespaces under the same names.
    await deleteNetns(names);
    this.created.push(...names);
    await createNetns(names);
    for (const n of names) await ipBatch(['link set lo up'], { netns: n });
  }

  async ip(role: string, lines: readonly string[]): Promise<void> {
    await ipBatch(lines, { netns: this.name(role) });
  }

  sysctl(role: string, entries: readonly (readonly [string, string])[]): void {
    writeSysctls(this.name(role), entries);
  }

  /** A veth pair between two namespaces, both ends up, without IPv6 link-local noise. */
  async veth(a: VethEnd, b: VethEnd): Promise<void> {
    await this.ip(a.role, [
      `link add ${a.ifname} address ${a.mac} type veth peer name ${b.ifname} address ${b.mac} netns ${this.name(b.role)}`,
    ]);
    for (const end of [a, b]) {
      await this.ip(end.role, [
        `link set ${end.ifname} addrgenmode none`,
        ...(end.address ? [`addr add ${end.address} dev ${end.ifname}`] : []),
        `link set ${end.ifname} up`,
      ]);
    }
  }

  async destroy(): Promise<void> {
    const left = await deleteNetns(this.created);
    if (left.length > 0) throw new Error(`could not delete namespaces: ${left.join(', ')}`);
  }
}
