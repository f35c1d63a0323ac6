/**
 * What the heap of this process holds, from a heap snapshot: how many separate copies of a string
 * (sharing one string among many holders cannot be seen from JavaScript: equal strings compare
 * equal, copies or not), how many objects of a class.
 */
import { getHeapSnapshot, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
  nodes: number[];
  strings: string[];
}

/**
 * The heap as the test's own objects leave it: a compile job V8 runs beside the code holds what a
 * hot closure holds until it is done, and a collection frees what nothing holds any more.
 */
export async function settle(): Promise<void> {
  await new Promise((r) => setTimeout(r, 50));
  gc();
  gc();
}

async function readSnapshot(): Promise<Snapshot> {
  await settle();
  const chunks: Buffer[] = [];
  for await (const chunk of getHeapSnapshot()) chunks.push(chunk as Buffer);
  return JSON.parse(Buffer.concat(chunks).toString('utf8')) as Snapshot;
}

/** In a frame of its own: an async function's suspended frame keeps its temporaries alive. */
function encoded(make: () => readonly string[]): Buffer[] {
  return make().map((v) => Buffer.from(v, 'utf8'));
}

/** Calls `visit` with the type and name of every node of a heap snapshot taken now. */
async function eachNode(visit: (type: string, name: string) => void): Promise<void> {
  const { snapshot, nodes, strings } = await readSnapshot();
  const fields = snapshot.meta.node_fields;
  const types = snapshot.meta.node_types[0];
  const width = fields.length;
  const typeAt = fields.indexOf('type');
  const nameAt = fields.indexOf('name');
  for (let i = 0; i < nodes.length; i += width)
    visit(types[nodes[i + typeAt] as number] as string, strings[nodes[i + nameAt] as number] as string);
}

/**
 * Copies of each string `make` returns in the heap now (flat or sliced strings). The strings `make`
 * built are not among them: only their bytes are kept while the snapshot is taken (a caller's own
 * string would be a copy, or a concatenation flattened into one whenever it was hashed).
 */
export async function stringCopies(make: () => readonly string[]): Promise<Map<string, number>> {
  const bytes = encoded(make);
  const counts = new Map<string, number>();
  await eachNode((type, name) => {
    if (type === 'string' || type === 'sliced string') counts.set(name, (counts.get(name) ?? 0) + 1);
  });
  return new Map(
    bytes.map((b) => {
      const value = b.toString('utf8');
      return [value, counts.get(value) ?? 0];
    }),
  );
}

/** Objects of class `name` in the heap now. */
export async function objectsOfClass(name: string): Promise<number> {
  let count = 0;
  await eachNode((type, node) => {
    if (type === 'object' && node === name) count++;
  });
  return count;
}

/** Cons strings (V8's trees of the pieces a concatenation joined) in the heap now, their nodes. */
export async function consStringNodes(): Promise<number> {
  let count = 0;
  await eachNode((type) => {
    if (type === 'concatenated string') count++;
  });
  return count;
}

/**
 * Strings in the heap now (flat, sliced or trees of pieces) that `matches` takes. A predicate, not a
 * regular expression: V8 keeps a regular expression's literal text as a string of its own.
 */
export async function stringsWhere(matches: (text: string) => boolean): Promise<number> {
  let count = 0;
  await eachNode((type, name) => {
    if ((type === 'string' || type === 'sliced string' || type === 'concatenated string') && matches(name))
      count++;
  });
  return count;
}
