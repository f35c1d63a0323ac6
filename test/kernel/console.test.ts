/**
 * The web console in a real browser (Debian's chromium driven by playwright-core): each page
 * loads, a denied probe shows up in the live flow table within 2 s, its explanation names the
 * policy that decided, the reach grid equals `switchyard lab reach --json` (measured only when
 * asked), the services and prefilter pages list the lab's, the flow table keeps the verdict on
 * screen at 1000 px and says how many rows it shows, the Explain form follows the address, the
 * bench page charts every scenario beside the advisor's recommendation, and nothing answers
 * without the token.
 *
 * Screenshots go to .switchyard/console/ (SWITCHYARD_CONSOLE_SCREENSHOTS=docs writes the ones
 * committed under docs/).
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { advise, parseWorkload, workloadFromIR } from '../../src/advise/index.js';
import { probeCapabilities } from '../../src/advise/probe.js';
import { socketsIn } from '../../src/agent/client.js';
import { scenarioNames } from '../../src/bench/registry.js';
import type { BenchReport } from '../../src/bench/results.js';
import { FLOW_INTERVAL_MS } from '../../src/dataplane/backend.js';
import { startConsole, type ConsoleServer } from '../../src/console/server.js';
import { staticDir } from '../../src/util/http/static.js';
import { converge, labDown, measureReach } from '../../src/lab/index.js';
import { agentStateDir } from '../../src/lab/agents.js';
import { readState } from '../../src/lab/state.js';
import { loadManifests } from '../../src/model/index.js';
import { describeKernel } from '../support/kernel.js';
import { cliOk, REPO } from './lab-harness.js';

const LAB = 'cocons';
// Relative, as a user types them: explanations show them as the policies' source.
const FILES = ['walkthrough', 'global', 'services'].map((d) =>
  relative(process.cwd(), join(REPO, 'examples', d)),
);
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const TOKEN = 'console-test-token-0123456789';
const BENCH = join(REPO, 'docs', 'benchmarks', 'results.json');
const SHOTS =
  process.env.SWITCHYARD_CONSOLE_SCREENSHOTS === 'docs'
    ? { dir: join(REPO, 'docs'), prefix: 'console-' }
    : { dir: join(REPO, '.switchyard', 'console'), prefix: '' };

const browserReady = existsSync(CHROMIUM) || process.env.CI === 'true';
const describeBrowser = browserReady ? describeKernel : describe.skip;

type Matrix = Record<string, Record<string, boolean>>;

function address(pod: string): string {
  const p = readState(LAB)?.topology?.pods.find((x) => x.id === pod);
  if (!p) throw new Error(`no pod ${pod}`);
  return p.address;
}

async function shot(page: Page, name: string, fullPage = false): Promise<void> {
  mkdirSync(SHOTS.dir, { recursive: true });
  await page.screenshot({ path: join(SHOTS.dir, `${SHOTS.prefix}${name}.png`), fullPage });
}

describeBrowser(
  `console: the web console in chromium${browserReady ? '' : ` (skipped: no ${CHROMIUM})`}`,
  () => {
    let server: ConsoleServer;
    let browser: Browser;
    let page: Page;

    beforeAll(async () => {
      if (!staticDir()) throw new Error("the console's bundle is missing: run `npm run build` first");
      await labDown(LAB);
      await converge({ name: LAB, model: loadManifests(FILES), files: FILES, mode: 'up', backend: 'ebpf' });
      server = await startConsole({
        host: '127.0.0.1',
        port: 0,
        token: TOKEN,
        agents: () => socketsIn(dirname(agentStateDir(LAB, 'x'))),
        lab: LAB,
        benchFile: BENCH,
        benchScenarios: scenarioNames(),
      });
      browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
      page = await browser.newPage({ viewport: { width: 1360, height: 820 } });
    });

    afterAll(async () => {
      await browser?.close();
      await server?.close();
      await labDown(LAB);
    });

    it('answers nothing without the token, and only to loopback host names', async () => {
      for (const path of [
        '/',
        '/app.js',
        '/api/info',
        '/api/flows/stream',
        '/api/explain?from=a&to=b&port=1',
      ]) {
        expect((await fetch(new URL(path, server.url))).status, path).toBe(401);
      }
      const wrong = await fetch(new URL('/api/info', server.url), {
        headers: { authorization: 'Bearer nope' },
      });
      expect(wrong.status).toBe(401);
      const ok = await fetch(new URL('/api/info', server.url), {
        headers: { authorization: `Bearer ${TOKEN}` },
      });
      expect(ok.status).toBe(200);
      // A page of another site resolving its name to 127.0.0.1 (DNS rebinding) is refused.
      const rebound = await new Promise<number>((resolve, reject) => {
        import('node:http').then(({ request }) => {
          const req = request(
            new URL('/api/info', server.url),
            { headers: { host: `evil.example:${server.port}`, authorization: `Bearer ${TOKEN}` } },
            (res) => {
              res.resume();
              resolve(res.statusCode ?? 0);
            },
          );
          req.on('error', reject);
          req.end();
        }, reject);
      });
      expect(rebound).toBe(403);
      await expect(
        startConsole({ host: '0.0.0.0', port: 0, token: TOKEN, agents: () => [] }),
      ).rejects.toThrow(/loopback/);
    });

    it("shows the lab's pods with their labels and the policies selecting them", async () => {
      // The token in the link is traded for an HttpOnly cookie and dropped from the address bar.
      await page.goto(`${server.url}?token=${TOKEN}`);
      expect(page.url()).toBe(server.url);
      const cookies = await page.context().cookies();
      expect(cookies.find((c) => c.name === 'switchyard_console')).toMatchObject({
        httpOnly: true,
        sameSite: 'Strict',
      });
      await page.waitForSelector('[data-testid=endpoints] tr[data-pod]');
      const pods = await page.$$eval('[data-testid=endpoints] tr[data-pod]', (rows) =>
        rows.map((r) => r.getAttribute('data-pod')),
      );
      expect(pods.sort()).toEqual([
        'outside/client',
        'shop/backend',
        'shop/db',
        'shop/frontend',
        'web/web-0',
        'web/web-1',
        'web/web-2',
      ]);
      const db = await page.textContent('[data-testid=endpoints] tr[data-pod="shop/db"]');
      expect(db).toContain('app=db');
      expect(db).toContain('GlobalPolicy protect-db');
      expect(db).toContain('NetworkPolicy shop/db-from-backend');
      expect(db).toContain('NetworkPolicy shop/default-deny');
      const policies = await page.$$eval('[data-testid=policies] tr[data-policy]', (rows) =>
        rows.map((r) => r.getAttribute('data-policy')),
      );
      expect(policies).toContain('GlobalPolicy protect-db');
      expect(policies).toContain('NetworkPolicy shop/frontend-from-anywhere');
      await shot(page, 'endpoints');
    });

    it('shows a denied probe in the live flow table within one flow interval and 1.5 s, linked to the policy that denied it', async () => {
      await page.goto(`${server.url}#/flows?verdict=deny`);
      await page.waitForSelector('[data-testid=live].live');
      const row = `[data-testid=flows] tr[data-verdict=deny][data-src="${address('outside/client')}"][data-dst="${address('shop/db')}"][data-dport="5432"]`;
      expect(await page.$$(row)).toHaveLength(0);
      const started = performance.now();
      const probe = measureReach(LAB, {
        port: 5432,
        protocol: 'TCP',
        from: ['outside/client'],
        timeoutMs: 500,
      });
      await page.waitForSelector(row, { timeout: 5000 });
      const latencyMs = Math.round(performance.now() - started);
      console.log(`console: denied probe in the browser's flow table ${latencyMs} ms after it was sent`);
      // The agents drain the kernel's aggregates once per interval; the rest is the stream.
      expect(latencyMs).toBeLessThan(FLOW_INTERVAL_MS + 1500);
      expect((await probe).matrix.results['outside/client']?.['shop/db']).toBe(false);
      expect(await page.textContent(row)).toContain('GlobalPolicy protect-db');

      await page.click(`${row} [data-testid=why]`);
      await page.waitForSelector('[data-testid=explanation]');
      expect(page.url()).toContain('#/explain?');
      const text = await page.textContent('[data-testid=explanation]');
      expect(text).toContain('DENIED');
      expect(text).toContain('denied by GlobalPolicy protect-db ingress rule 1');
      expect(await page.textContent('[data-side=ingress] [data-testid=policy]')).toBe(
        'GlobalPolicy protect-db',
      );
      // The rule the dataplane recorded is the one the evaluator names.
      expect(await page.getAttribute('[data-testid=agreement]', 'class')).toBe('agree');
      await shot(page, 'explain');

      // Some allowed and logged traffic too, then every flow, unfiltered.
      await measureReach(LAB, { port: 8080, protocol: 'TCP', timeoutMs: 300 });
      await measureReach(LAB, { port: 80, protocol: 'TCP', timeoutMs: 300 });
      await measureReach(LAB, {
        port: 5432,
        protocol: 'TCP',
        from: ['outside/client', 'shop/frontend'],
        timeoutMs: 300,
      });
      await page.goto(`${server.url}#/flows`);
      await page.waitForSelector('[data-testid=flows] tr[data-verdict=allow]');
      await page.waitForTimeout(1600); // let the "new row" highlight fade before the picture
      await shot(page, 'flows');
    });

    it('draws the reach matrix exactly as `switchyard lab reach --json` measures it', async () => {
      await page.goto(`${server.url}#/reach?port=5432&protocol=TCP`);
      await page.waitForSelector('[data-testid=matrix][data-port="5432"][data-measured="0"]');
      await page.click('[data-testid=measure]');
      await page.waitForSelector('[data-testid=matrix][data-port="5432"][data-measured="1"] td[data-reach]');
      const cells = await page.$$eval('[data-testid=matrix] td[data-reach]', (tds) =>
        tds.map((td) => [
          td.getAttribute('data-from'),
          td.getAttribute('data-to'),
          td.getAttribute('data-reach'),
        ]),
      );
      const grid: Matrix = {};
      for (const [from, to, reach] of cells) (grid[from as string] ??= {})[to as string] = reach === '1';
      const cli = JSON.parse(await cliOk(['lab', 'reach', '--name', LAB, '--port', '5432', '--json'])) as {
        results: Matrix;
      };
      expect(grid).toEqual(cli.results);
      expect((await measureReach(LAB, { port: 5432, protocol: 'TCP' })).matrix.results).toEqual(grid);
      expect(grid['shop/backend']?.['shop/db']).toBe(true);
      expect(grid['outside/client']?.['shop/db']).toBe(false);
      expect(await page.textContent('[data-testid=reach-summary]')).toContain('matches the prediction');
      await shot(page, 'reach');
    });

    it("charts the bench results beside the advisor's recommendation", async () => {
      const report = JSON.parse(readFileSync(BENCH, 'utf8')) as BenchReport;
      const state = readState(LAB);
      if (!state) throw new Error('no lab state');
      const expected = advise(parseWorkload(workloadFromIR(state.ir)), report, probeCapabilities());
      await page.goto(`${server.url}#/bench`);
      await page.waitForSelector('[data-testid=advice]');
      // Every chart image loaded (an <img> that failed has no natural width).
      await expect
        .poll(
          () =>
            page.$$eval(
              'figure img',
              (imgs) =>
                imgs.filter((i) => {
                  const img = i as unknown as { complete: boolean; naturalWidth: number };
                  return img.complete && img.naturalWidth > 0;
                }).length,
            ),
          { timeout: 10_000 },
        )
        .toBe(report.scenarios.length);
      const figures = await page.$$eval('figure[data-scenario]', (f) =>
        f.map((x) => x.getAttribute('data-scenario')),
      );
      // Every scenario bench knows: charted, or marked as missing from the file (10 of 13 before).
      expect(figures.sort()).toEqual(scenarioNames().sort());
      const missing = await page.$$eval('figure[data-missing]', (f) =>
        f.map((x) => x.getAttribute('data-scenario')),
      );
      expect(missing.sort()).toEqual(
        scenarioNames()
          .filter((n) => !report.scenarios.some((s) => s.name === n))
          .sort(),
      );
      expect(await page.textContent('[data-testid=advised-backend]')).toBe(expected.backend);
      expect(await page.textContent('[data-testid=advice]')).toContain(expected.summary);
      expect(await page.textContent('[data-testid=tie-rule]')).toContain('1.10x');
      // The headline's winning concerns are rows that chose the advised backend.
      for (const concern of expected.decidedBy) {
        expect(
          await page.textContent(`tr[data-concern="${concern}"] [data-testid=choice]`),
          concern,
        ).toContain(expected.backend);
      }
      await shot(page, 'bench');
    });

    it('keeps the Explain form in step with the address', async () => {
      await page.goto(`${server.url}#/explain?from=outside/client&to=shop/db&port=5432&protocol=TCP`);
      await page.waitForSelector('[data-testid=explanation]');
      expect(await page.inputValue('input[name=from]')).toBe('outside/client');
      // A new address (a link, back/forward): the inputs follow it instead of keeping the old ones.
      await page.evaluate(
        "location.hash = '#/explain?from=shop/frontend&to=shop/backend&port=8080&protocol=TCP'",
      );
      await expect.poll(() => page.inputValue('input[name=from]')).toBe('shop/frontend');
      expect(await page.inputValue('input[name=to]')).toBe('shop/backend');
      expect(await page.inputValue('input[name=port]')).toBe('8080');
      await page.goBack();
      await expect.poll(() => page.inputValue('input[name=from]')).toBe('outside/client');
      expect(await page.inputValue('input[name=port]')).toBe('5432');
    });

    it('says how many flows it shows, and shows more on demand', async () => {
      await page.goto(`${server.url}#/flows?rows=2`);
      await page.waitForSelector('[data-testid=flows] tbody tr');
      await expect.poll(() => page.$$eval('[data-testid=flows] tbody tr', (r) => r.length)).toBe(2);
      const count = (await page.textContent('[data-testid=flow-count]')) ?? '';
      const total = Number(/^showing 2 of (\d+) flows$/.exec(count)?.[1]);
      expect(total, count).toBeGreaterThan(4);
      await page.click('[data-testid=more]');
      expect(await page.$$eval('[data-testid=flows] tbody tr', (r) => r.length)).toBe(4);
      expect(await page.textContent('[data-testid=flow-count]')).toMatch(/^showing 4 of \d+ flows$/);
      await page.goto(`${server.url}#/flows?verdict=deny`);
      await page.waitForSelector('[data-testid=flows] tbody tr');
      expect(await page.textContent('[data-testid=flow-count]')).toMatch(
        /^showing (\d+) of \1 matching flows \(\d+ in all\)$/,
      );
    });

    it('keeps the verdict and the deciding rule on screen in a 1000 px window', async () => {
      await page.setViewportSize({ width: 1000, height: 760 });
      try {
        await page.goto(`${server.url}#/flows?verdict=deny`);
        await page.waitForSelector('[data-testid=flows] tbody tr [data-testid=why]');
        for (const sel of [
          '[data-testid=flows] tbody tr .verdict',
          '[data-testid=flows] tbody tr [data-testid=why]',
        ]) {
          const box = await page.locator(sel).first().boundingBox();
          expect(box, sel).not.toBeNull();
          expect((box?.x ?? 0) + (box?.width ?? 0), sel).toBeLessThanOrEqual(1000);
        }
        // The process column names the pod the process runs in, where the backend records one.
        const processes = await page.$$eval('[data-testid=process]', (tds) =>
          tds.map((t) => t.textContent ?? ''),
        );
        for (const p of processes.filter((x) => x.trim() !== '')) expect(p).toMatch(/\[\d+\]in \S+\/\S+/);
        await shot(page, 'flows-1000');
      } finally {
        await page.setViewportSize({ width: 1360, height: 820 });
      }
    });

    it('opens the reach page without measuring: predicted first, real connections on the button', async () => {
      // Port 9999: nothing serves it, nothing else probes it, so any flow to it is the page's.
      const flowsTo = async (port: number): Promise<number> => {
        const r = await fetch(new URL('/api/flows?limit=10000', server.url), {
          headers: { authorization: `Bearer ${TOKEN}` },
        });
        const body = (await r.json()) as { items: { dport: number }[] };
        return body.items.filter((f) => f.dport === port).length;
      };
      await page.goto(`${server.url}#/reach?port=9999&protocol=TCP`);
      await page.waitForSelector('[data-testid=matrix][data-port="9999"][data-measured="0"]');
      expect(await page.textContent('[data-testid=reach-summary]')).toContain('predicted only');
      // Nobody serves 9999: no cell connects; pairs policy allows say "port not served", pairs it
      // denies "blocked by policy" (the drop comes first), as the prediction's outcomes say.
      const outcomes = await page.$$eval('[data-testid=matrix] td[data-outcome]', (tds) =>
        tds
          .filter((t) => t.getAttribute('data-from') !== t.getAttribute('data-to'))
          .map((t) => t.getAttribute('data-outcome')),
      );
      expect(outcomes).not.toContain('connected');
      expect(outcomes).toContain('not-served');
      await page.waitForTimeout(FLOW_INTERVAL_MS + 500);
      expect(await flowsTo(9999)).toBe(0);
      await page.click('[data-testid=measure]');
      await page.waitForSelector('[data-testid=matrix][data-port="9999"][data-measured="1"]', {
        timeout: 30_000,
      });
      await expect.poll(() => flowsTo(9999), { timeout: FLOW_INTERVAL_MS + 3000 }).toBeGreaterThan(0);
    });

    it('lists the services with the pods behind them, and the prefilters', async () => {
      const state = readState(LAB);
      if (!state) throw new Error('no lab state');
      await page.goto(`${server.url}#/services`);
      await page.waitForSelector('[data-testid=services] tr[data-service]');
      const web = page.locator('[data-testid=services] tr[data-service="web/web"][data-port="80"]');
      const backends = await web
        .locator('[data-backend]')
        .evaluateAll((els) => els.map((e) => e.getAttribute('data-backend')));
      expect(backends.sort()).toEqual(['web/web-0', 'web/web-1', 'web/web-2']);
      const svc = state.ir.services.find((t) => t.service === 'web/web');
      expect(await web.textContent()).toContain(`${svc?.address}:80/TCP`);
      expect(await web.textContent()).toContain(`${address('web/web-1')}:8081`);
      await shot(page, 'services');

      await page.goto(`${server.url}#/prefilter`);
      await page.waitForSelector('[data-testid=prefilters] tr[data-prefilter]');
      const pf = state.ir.prefilters.find((p) => p.name === 'blocklist');
      const cidrs = state.ir.ipSets.find((x) => x.id === pf?.set)?.cidrs ?? [];
      expect(cidrs.length).toBeGreaterThan(0);
      const row = page.locator('[data-testid=prefilters] tr[data-prefilter="blocklist"]');
      expect(await row.getAttribute('data-cidrs')).toBe(String(cidrs.length));
      for (const c of cidrs) expect(await row.textContent()).toContain(c);
      await shot(page, 'prefilter');
    });
  },
);
