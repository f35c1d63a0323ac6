/**
 * What the heap of this process holds, from a heap snapshot: how many separate copies of a string
 * (sharing one string among many holders cannot be seen from JavaScript: equal strings compare
 * equal, copies or not), how many objects of a class.
 */
import { getHeapSnapshot } from 'node:v8';

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
  nodes: number[];
  strings: string[];
}

async function readSnapshot(): Promise<Snapshot> {
  const chunks: Buffer[] = [];
  for await (const chunk of getHeapSnapshot()) chunks.push(chunk as Buffer);
  return JSON.parse(Buffer.concat(chunks).toString('utf8')) as Snapshot;
}

/** In a frame of its own: an async function's suspended frame keeps its temporaries alive. */
function encoded(make: () => readonly string[]): Buffer[] {
  return make().map((v) => Buffer.from(v, 'utf8'));
}

/**
 * Copies of each string `make` returns in the heap now (flat or sliced strings). The strings `make`
 * built are not among them: only their bytes are kept while the snapshot is taken (a caller's own
 * string would be a copy, or a concatenation flattened into one whenever it was hashed).
 */
export async function stringCopies(make: () => readonly string[]): Promise<Map<string, number>> {
  const bytes = encoded(make);
  const { snapshot, nodes, strings } = await readSnapshot();
  const out = new Map(bytes.map((b) => [b.toString('utf8'), 0]));
  const fields = snapshot.meta.node_fields;
  const types = snapshot.meta.node_types[0];
  const width = fields.length;
  const typeAt = fields.indexOf('type');
  const nameAt = fields.indexOf('name');
  for (let i = 0; i < nodes.length; i += width) {
    const type = types[nodes[i + typeAt] as number];
    if (type !== 'string' && type !== 'sliced string') continue;
    const value = strings[nodes[i + nameAt] as number] as string;
    const seen = out.get(value);
    if (seen !== undefined) out.set(value, seen + 1);
  }
  return out;
}

/** Objects of class `name` in the heap now. */
export async function objectsOfClass(name: string): Promise<number> {
  const { snapshot, nodes, strings } = await readSnapshot();
  const fields = snapshot.meta.node_fields;
  const types = snapshot.meta.node_types[0];
  const width = fields.length;
  const typeAt = fields.indexOf('type');
  const nameAt = fields.indexOf('name');
  let count = 0;
  for (let i = 0; i < nodes.length; i += width)
    if (types[nodes[i + typeAt] as number] === 'object' && strings[nodes[i + nameAt] as number] === name)
      count++;
  return count;
}
