/** The console's single-page app: hash routes, one component per page. */
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { get, MODE, type InfoResponse } from './api.js';
import { BenchPage } from './pages/bench.js';
import { DropsPage } from './pages/drops.js';
import { EndpointsPage } from './pages/endpoints.js';
import { ExplainPage } from './pages/explain.js';
import { FlowsPage } from './pages/flows.js';
import { PrefilterPage } from './pages/prefilter.js';
import { ReachPage } from './pages/reach.js';
import { ServicesPage } from './pages/services.js';
import { href, parseHash, type Route } from './route.js';
import './style.css';

const PAGES: { id: string; title: string; lab?: boolean }[] = [
  { id: 'endpoints', title: 'Endpoints' },
  { id: 'flows', title: 'Flows' },
  { id: 'drops', title: 'Kernel drops' },
  { id: 'explain', title: 'Explain' },
  { id: 'services', title: 'Services', lab: true },
  { id: 'prefilter', title: 'Prefilter', lab: true },
  { id: 'reach', title: 'Reach matrix', lab: true },
  { id: 'bench', title: 'Benchmarks', lab: true },
].filter((p) => MODE === 'console' || !p.lab);

function Header({ info, route }: { info?: InfoResponse; route: Route }) {
  const lab = info?.lab;
  return (
    <header>
      <div class="brand">
        <span class="logo">⇄</span> Switchyard
        {lab && (
          <span class="lab" data-testid="lab">
            lab <b>{lab.name}</b> · {lab.backend ?? '-'}
          </span>
        )}
      </div>
      <nav>
        {PAGES.map((p) => (
          <a href={href(p.id)} class={route.page === p.id ? 'active' : ''} data-page={p.id}>
            {p.title}
          </a>
        ))}
      </nav>
      <div class="nodes">
        {info?.agents.map((a) => (
          <span
            class={`node ${a.lastError ? 'bad' : 'ok'}`}
            title={a.lastError?.message ?? `revision ${a.revision ?? '-'}, ${a.repairs} repairs`}
          >
            {a.node} <small>rev {a.revision ?? '-'}</small>
          </span>
        ))}
        {info?.errors.map((e) => (
          <span class="node bad" title={e.error}>
            {e.node} unreachable
          </span>
        ))}
      </div>
    </header>
  );
}

function App() {
  const [route, setRoute] = useState(parseHash);
  const [info, setInfo] = useState<InfoResponse>();
  useEffect(() => {
    const onHash = (): void => setRoute(parseHash());
    addEventListener('hashchange', onHash);
    return () => removeEventListener('hashchange', onHash);
  }, []);
  useEffect(() => {
    const load = (): void => void get<InfoResponse>('/api/info').then(setInfo, () => undefined);
    load();
    const timer = setInterval(load, 5000);
    return () => clearInterval(timer);
  }, []);
  let page;
  switch (route.page) {
    case 'flows':
      page = <FlowsPage params={route.params} />;
      break;
    case 'drops':
      page = <DropsPage />;
      break;
    case 'explain':
      page = <ExplainPage params={route.params} />;
      break;
    case 'reach':
      page = <ReachPage params={route.params} info={info} />;
      break;
    case 'services':
      page = <ServicesPage />;
      break;
    case 'prefilter':
      page = <PrefilterPage />;
      break;
    case 'bench':
      page = <BenchPage />;
      break;
    default:
      page = <EndpointsPage />;
  }
  return (
    <>
      <Header info={info} route={route} />
      <main data-route={route.page}>{page}</main>
    </>
  );
}

const root = document.getElementById('app');
if (root) render(<App />, root);
