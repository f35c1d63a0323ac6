/** What the CLI and a lab's probe server say to each other, and what a probe finds out. */
import { join } from 'node:path';

export interface ProbePort {
  port: number;
  protocol: 'TCP' | 'UDP';
}

export interface ProbePodConfig {
  /** `namespace/name`: what the server answers with. */
  id: string;
  netns: string;
  /** The pod's cgroup: sockets are created from inside it, so they carry it. */
  cgroup: string;
  ports: ProbePort[];
}

export interface ProbeServerConfig {
  lab: string;
  pods: ProbePodConfig[];
}

export type ControlRequest = { op: 'ping' } | { op: 'reload' };

export interface ControlResponse {
  ok: boolean;
  pods?: number;
  sockets?: number;
  /** Pods whose sockets are open after a reload: the lab's ready pods. */
  serving?: string[];
  /** Per-pod problems of a reload (the other pods are served). */
  errors?: string[];
  error?: string;
}

/** Marks a probe server's command line so cleanup can find one whose pid was never recorded. */
export const SERVER_MARK = '--switchyard-probe-server';

export function probeConfigPath(labDir: string): string {
  return join(labDir, 'probe.json');
}

export function controlSocketPath(labDir: string): string {
  return join(labDir, 'probe.sock');
}

export function probeLogPath(labDir: string): string {
  return join(labDir, 'probe.log');
}

export interface ProbeTarget {
  id: string;
  address: string;
}

/**
 * What a probe server answers: `namespace/name PEER`, the pod and the client address it saw (after
 * any NAT on the way), so a probe learns who answered and whether its source address survived.
 */
export function probeAnswer(pod: string, peer: string | undefined): string {
  return `${pod} ${peer ?? '?'}\n`;
}

/** `namespace/name PEER` → its parts (a server from before peers were reported sends the pod alone). */
export function parseProbeAnswer(text: string): { answer: string; peer?: string } {
  const [answer = '', peer] = text.trim().split(/\s+/);
  return peer && peer !== '?' ? { answer, peer } : { answer };
}

export interface ProbeOutcome {
  ok: boolean;
  /** The `namespace/name` the server answered with. */
  answer?: string;
  /** The client address the answering server saw (the source after NAT). */
  peer?: string;
  error?: string;
  ms: number;
}
