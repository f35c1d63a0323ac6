import type { ComponentChildren } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { get, type NodeError } from '../api.js';

export interface Loaded<T> {
  data?: T;
  error?: string;
  loading: boolean;
  reload: () => void;
}

/** GETs `path` (again whenever it changes). */
export function useApi<T>(path: string | undefined): Loaded<T> {
  const [state, setState] = useState<{ data?: T; error?: string; loading: boolean }>({ loading: true });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    if (!path) return;
    let live = true;
    setState((s) => ({ ...s, loading: true }));
    get<T>(path).then(
      (data) => live && setState({ data, loading: false }),
      (e: Error) => live && setState({ error: e.message, loading: false }),
    );
    return () => {
      live = false;
    };
  }, [path, tick]);
  return { ...state, reload: () => setTick((t) => t + 1) };
}

export function Problem({ children }: { children: ComponentChildren }) {
  return <div class="problem">{children}</div>;
}

export function NodeErrors({ errors }: { errors?: NodeError[] }) {
  if (!errors?.length) return null;
  return (
    <Problem>
      {errors.map((e) => (
        <div>
          node {e.node}: {e.error}
        </div>
      ))}
    </Problem>
  );
}

export function Chips({ values, kind = '' }: { values: string[]; kind?: string }) {
  if (values.length === 0) return <span class="muted">—</span>;
  return (
    <span class="chips">
      {values.map((v) => (
        <span class={`chip ${kind}`}>{v}</span>
      ))}
    </span>
  );
}
