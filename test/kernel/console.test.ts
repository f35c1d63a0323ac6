/**
 * The web console in a real browser (Debian's chromium driven by playwright-core): each page
 * loads, a denied probe shows up in the live flow table within 2 s, its explanation names the
 * policy that decided, the reach grid equals `switchyard lab reach --json`, the bench page charts
 * a results file beside the advisor's recommendation, and nothing answers without the token.
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

const LAB = 'wcc';
// Relative, as a user types them: explanations show them as the policies' source.
const FILES = ['walkthrough', 'global'].map((d) => relative(process.cwd(), join(REPO, 'examples', d)));
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
      expect(pods.sort()).toEqual(['outside/client', 'shop/backend', 'shop/db', 'shop/frontend']);
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
      await page.waitForSelector('[data-testid=matrix][data-port="5432"] td[data-reach]');
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
      expect(figures.sort()).toEqual(report.scenarios.map((s) => s.name).sort());
      expect(await page.textContent('[data-testid=advised-backend]')).toBe(expected.backend);
      expect(await page.textContent('[data-testid=advice]')).toContain(expected.summary);
      await shot(page, 'bench');
    });
  },
);
