/**
 * Gives the heap's garbage back to the system when the agent goes quiet. V8 keeps the old
 * generation it grew to while a sync or a burst of changes allocated (at 10k endpoints the heap
 * grew to 380 MiB for 143 MiB of live data after 100 changes) and shrinks it only under pressure;
 * one full collection once the work is done returns those pages. Agents run with `--expose-gc`
 * (`AGENT_NODE_FLAGS`); elsewhere (tests, a hand-started agent) this does nothing.
 */
export function compactHeap(): void {
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
}
