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

/**
 * Which instance wrote each target last, across every backend instance of the process: a shadow
 * is only good while its own instance was the last to write (a second instance with other
 * options, or another backend, may have rewritten the node since).
 */
const lastWriter = new Map<string, Shadows<unknown>>();

export class Shadows<T> {
  private readonly byTarget = new Map<string, T>();

  get(target: NodeTarget): T | undefined {
    const key = keyOf(target);
    if (lastWriter.get(key) !== this) return undefined;
    return this.byTarget.get(key);
  }

  set(target: NodeTarget, shadow: T): void {
    const key = keyOf(target);
    lastWriter.set(key, this);
    this.byTarget.set(key, shadow);
  }

  drop(target: NodeTarget): void {
    this.byTarget.delete(keyOf(target));
  }

  /**
   * Runs an apply of `target`, which makes this instance its last writer even when the apply
   * fails halfway; when it fails, its shadow goes (and the error is rethrown).
   */
  async guard<R>(target: NodeTarget, apply: () => Promise<R>): Promise<R> {
    const key = keyOf(target);
    if (lastWriter.get(key) !== this) this.byTarget.delete(key);
    lastWriter.set(key, this);
    try {
      return await apply();
    } catch (e) {
      this.drop(target);
      throw e;
    }
  }
}
