/** Which policy and rule decide a connection (the agent's evaluator), side by side with the flow. */
import { useEffect, useState } from 'preact/hooks';
import {
  query,
  type EndpointsResponse,
  type Explanation,
  type RuleRef,
  type SideExplanation,
} from '../api.js';
import { href } from '../route.js';
import { Chips, Problem, useApi } from './common.js';

function Rule({ rule, label }: { rule: RuleRef; label: string }) {
  return (
    <div class="rule">
      <span class="muted">{label}</span> <b data-testid="policy">{rule.policy}</b> rule {rule.ruleIndex}{' '}
      <span class={`verdict ${rule.action === 'deny' ? 'deny' : 'allow'}`}>{rule.action}</span>{' '}
      <span class="mono small">{rule.id}</span>
      {rule.source && <div class="muted small mono">{rule.source}</div>}
    </div>
  );
}

function Side({ side }: { side: SideExplanation }) {
  return (
    <div class={`card side-card ${side.allowed ? 'allow' : 'deny'}`} data-side={side.direction}>
      <h3>
        {side.direction} {side.direction === 'egress' ? 'from' : 'to'} {side.endpoint}:{' '}
        <span class={`verdict ${side.allowed ? 'allow' : 'deny'}`}>
          {side.allowed ? 'allowed' : 'denied'}
        </span>
      </h3>
      <p>{side.text}</p>
      {side.rule && <Rule rule={side.rule} label="decided by" />}
      {side.passedBy && <Rule rule={side.passedBy} label="passed to the Kubernetes tier by" />}
      {side.logged.map((r) => (
        <Rule rule={r} label="logged by" />
      ))}
      <div class="small">
        global policies: <Chips values={side.globalPolicies} kind="policy" />
      </div>
      <div class="small">
        network policies: <Chips values={side.networkPolicies} kind="policy" />
      </div>
    </div>
  );
}

/** A connection's end: a pod (suggested from the `pods` datalist) or an address. */
function PeerInput(props: { name: 'from' | 'to'; value: string; onInput: (e: Event) => void }) {
  return (
    <label>
      {props.name}{' '}
      <input
        name={props.name}
        list="pods"
        value={props.value}
        onInput={props.onInput}
        placeholder="ns/pod or address"
      />
    </label>
  );
}

/** Whether the rule the dataplane recorded is the one the evaluator names. */
function agrees(x: Explanation, rule: string): boolean {
  return [x.egress, x.ingress].some(
    (s) =>
      s &&
      !s.allowed &&
      (s.rule?.id === rule ||
        (s.reason === 'kubernetes-default-deny' && rule === `${s.endpoint}/${s.direction}/default`)),
  );
}

export function ExplainPage({ params }: { params: URLSearchParams }) {
  const q = {
    from: params.get('from') ?? '',
    to: params.get('to') ?? '',
    port: params.get('port') ?? '',
    protocol: params.get('protocol') ?? 'TCP',
    family: params.get('family') ?? '',
  };
  const rule = params.get('rule') ?? '';
  const ready = q.from && q.to && (q.port || q.protocol === 'ICMP');
  const x = useApi<Explanation>(
    ready ? `/api/explain${query({ ...q, node: params.get('node') ?? undefined })}` : undefined,
  );
  const eps = useApi<EndpointsResponse>('/api/endpoints');
  const [form, setForm] = useState(q);
  // The address is the truth: a new one (a "why?" link, back/forward, an edited hash) refills the
  // form, which otherwise kept the inputs of the first page it was opened with.
  useEffect(() => setForm(q), [q.from, q.to, q.port, q.protocol, q.family]);
  const submit = (e: Event): void => {
    e.preventDefault();
    location.hash = href('explain', form);
  };
  const field = (k: keyof typeof form) => (e: Event) =>
    setForm({ ...form, [k]: (e.target as HTMLInputElement).value });
  return (
    <section>
      <h1>Explain</h1>
      <form class="filters" onSubmit={submit}>
        <datalist id="pods">
          {eps.data?.items.map((e) => (
            <option value={e.id} />
          ))}
        </datalist>
        <PeerInput name="from" value={form.from} onInput={field('from')} />
        <PeerInput name="to" value={form.to} onInput={field('to')} />
        <label>
          port <input name="port" size={6} value={form.port} onInput={field('port')} />
        </label>
        <label>
          protocol
          <select name="protocol" value={form.protocol} onChange={field('protocol')}>
            {['TCP', 'UDP', 'SCTP', 'ICMP'].map((p) => (
              <option value={p}>{p}</option>
            ))}
          </select>
        </label>
        <label>
          family
          <select name="family" value={form.family} onChange={field('family')}>
            <option value="">IPv4</option>
            <option value="6">IPv6</option>
          </select>
        </label>
        <button type="submit">explain</button>
      </form>
      {!ready && (
        <p class="muted">Pick two pods (or addresses) and a port, or follow “why?” from a denied flow.</p>
      )}
      {x.error && <Problem>{x.error}</Problem>}
      {ready && x.data && (
        <div data-testid="explanation">
          <div class={`banner ${x.data.allowed ? 'allow' : 'deny'}`}>
            <div class="big">{x.data.allowed ? 'ALLOWED' : 'DENIED'}</div>
            <div>
              <b>{x.data.summary}</b>
              <div class="muted small">
                {x.data.from.endpoint ?? x.data.from.address} ({x.data.from.address}
                {x.data.from.node ? ` on ${x.data.from.node}` : ''}) →{' '}
                {x.data.to.endpoint ?? x.data.to.address} ({x.data.to.address}
                {x.data.to.node ? ` on ${x.data.to.node}` : ''})
                {x.data.prefilter ? ` · prefilter ${x.data.prefilter}` : ''}
              </div>
            </div>
          </div>
          {rule && (
            <p class={agrees(x.data, rule) ? 'agree' : 'disagree'} data-testid="agreement">
              The dataplane recorded rule <span class="mono">{rule}</span>:{' '}
              {agrees(x.data, rule)
                ? 'the same decision the evaluator explains.'
                : 'not the rule the evaluator names (has the desired state changed since?).'}
            </p>
          )}
          <div class="sides">
            {x.data.egress && <Side side={x.data.egress} />}
            {x.data.ingress && <Side side={x.data.ingress} />}
          </div>
        </div>
      )}
    </section>
  );
}
