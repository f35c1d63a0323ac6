/**
 * What a backend's own applies wrote to each node target, kept in the backend instance (see
 * Backend.apply and Backend.dropShadow). Absent for a target nobody applied to in this process,
 * after dropShadow, and after a failed apply (the kernel may then hold part of the new state):
 * the next apply reads the kernel once to build it again.
 */
import type { NodeTarget } from './backend.js';

function keyOf(target: NodeTarget): string {
  return `${target.scope}\0${target.node}\0${target.netns}`;
}

export class Shadows<T> {
  private readonly byTarget = new Map<string, T>();

  get(target: NodeTarget): T | undefined {
    return this.byTarget.get(keyOf(target));
  }

  set(target: NodeTarget, shadow: T): void {
    this.byTarget.set(keyOf(target), shadow);
  }

  drop(target: NodeTarget): void {
    this.byTarget.delete(keyOf(target));
  }

  /** Runs an apply of `target`; when it fails, its shadow goes (and the error is rethrown). */
  async guard<R>(target: NodeTarget, apply: () => Promise<R>): Promise<R> {
    try {
      return await apply();
    } catch (e) {
      this.drop(target);
      throw e;
    }
  }
}
