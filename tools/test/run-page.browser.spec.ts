import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startInProcessRun, startLocalTrainRun, type RunPageTarget } from './run-page-target.js';

/**
 * The live run page in real headless Chromium (Debian's `chromium`; `.ci/run` installs it when missing),
 * driven by playwright-core, twice: against a live `m3ae train --local` (a real coordinator process serving the page
 * on --metrics-port, a worker process, a private redis-server), and against an in-process run that the test steers
 * through every state (waiting, training, finished, failed). Screenshots go to test-artifacts/.
 */
const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const artifacts = resolve(import.meta.dirname, '../../test-artifacts');

/**
 * The little of the DOM the page-side functions below touch (this project compiles without DOM types; the
 * functions are serialised and run in the browser, under the page's Content Security Policy).
 */
interface PageElement {
  textContent: string | null;
  hidden: boolean;
  complete: boolean;
  naturalWidth: number;
  naturalHeight: number;
  getAttribute(name: string): string | null;
}
declare const document: { querySelector(selector: string): PageElement | null };

const loaded = (): boolean => document.querySelector('#run-id')?.textContent !== '…';
const stepAbove = (n: number): boolean => Number((document.querySelector('#step')?.textContent ?? '').split('/')[0]) > n;

/** Completed steps shown by the page's step counter ("12 / 40" → 12). */
async function shownStep(page: Page): Promise<number> {
  const text = (await page.textContent('#step')) ?? '';
  const n = Number(text.split('/')[0]?.trim());
  return Number.isFinite(n) ? n : -1;
}

for (const kind of ['local-train', 'in-process'] as const) {
  describe(`the run page in headless Chromium (${kind} run)`, () => {
    let work: string;
    let target: RunPageTarget;
    let browser: Browser;

    beforeAll(async () => {
      if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install Debian's chromium package (apt-get install -y chromium)`);
      await mkdir(artifacts, { recursive: true });
      work = await mkdtemp(join(tmpdir(), 'm3ae-run-page-'));
      target = kind === 'local-train' ? await startLocalTrainRun(work) : await startInProcessRun(work);
      browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
    });

    afterAll(async () => {
      await browser?.close();
      await target?.close();
      if (work) await rm(work, { recursive: true, force: true });
    });

    it('loads, advances its step counter, draws loss curves and shows the reconstruction grid, with no errors', async () => {
      const page = await browser.newPage({ viewport: { width: 1280, height: 1500 } });
      const problems: string[] = [];
      page.on('console', (m) => {
        if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`);
      });
      page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
      page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText ?? ''}`));
      const outside: string[] = [];
      page.on('request', (r) => {
        if (!r.url().startsWith(new URL(target.url).origin)) outside.push(r.url());
      });

      const response = await page.goto(target.url);
      expect(response?.status()).toBe(200);
      await page.waitForFunction(loaded);

      const control = target.control;
      if (control) {
        // Before the first step: a clear "waiting for workers" state.
        await page.waitForSelector('#phase[data-phase="waiting"]');
        expect(await page.textContent('#phase')).toBe('waiting for workers');
        expect(await page.isVisible('#phase-message')).toBe(true);
        expect(await page.isVisible('#grid-empty')).toBe(true);
        control.start();
      }

      // The step counter advances (twice, so it is live, not one late render).
      await page.waitForFunction(stepAbove, 0, { timeout: 60_000 });
      const first = await shownStep(page);
      await page.waitForFunction(stepAbove, first, { timeout: 60_000 });
      const second = await shownStep(page);
      expect(second).toBeGreaterThan(first);
      expect(await page.getAttribute('#phase', 'data-phase')).toMatch(/^(training|finished)$/);

      // A loss chart with points: at least two steps drawn as a line for the total loss and each objective.
      await page.waitForFunction(() => Number(document.querySelector('#loss-chart')?.getAttribute('data-points')) >= 2);
      const total = await page.getAttribute('#loss-chart polyline[data-series="total"]', 'points');
      const pairs = (total ?? '').trim().split(/\s+/).map((p) => p.split(',').map(Number));
      expect(pairs.length).toBeGreaterThanOrEqual(2);
      for (const [x, y] of pairs) {
        expect(Number.isFinite(x) && Number.isFinite(y)).toBe(true);
      }
      for (const o of ['mlm', 'mim', 'itm']) expect(await page.$(`#loss-chart polyline[data-series="${o}"]`)).not.toBeNull();
      expect(Number(await page.getAttribute('#throughput-chart', 'data-points'))).toBeGreaterThanOrEqual(2);
      if (control) {
        // Held-out evaluations: curves with their baselines (dashed), and a line saying where they stand.
        await page.waitForFunction(() => Number(document.querySelector('#heldout-accuracy-chart')?.getAttribute('data-points')) >= 2, undefined, { timeout: 60_000 });
        expect(await page.getAttribute('#heldout-accuracy-chart polyline[data-series="itm-chance"]', 'stroke-dasharray')).toBe('6,4');
        expect(await page.$('#heldout-loss-chart polyline[data-series="unigram-model"]')).not.toBeNull();
        expect(await page.textContent('#heldout-summary')).toMatch(
          /^held-out after step \d+: ITM accuracy [\d.]+% \(chance 50\.0%, (above|not above)\); MLM loss .* nats \(unigram model 5\.000, (below|not below); unigram entropy of the training captions 4\.000\)/,
        );
      } else {
        expect(await page.textContent('#heldout-summary')).toBe('no held-out evaluation (evaluation.every = 0)');
      }

      // The newest reconstruction grid, decoded by the browser.
      await page.waitForFunction(
        () => {
          const img = document.querySelector('#grid');
          return !!img && !img.hidden && img.complete && img.naturalWidth > 0;
        },
        undefined,
        { timeout: 60_000 },
      );
      const size = await page.evaluate(() => {
        const img = document.querySelector('#grid');
        return [img?.naturalWidth ?? 0, img?.naturalHeight ?? 0];
      });
      expect(size[0]).toBeGreaterThan(0);
      expect(size[1]).toBeGreaterThan(0);
      expect(await page.textContent('#grid-caption')).toMatch(/^after step \d+$/);

      // Workers, the step-time breakdown, and no secret anywhere on the page.
      expect(await page.$$eval('#workers tbody tr[data-worker]', (rows) => rows.length)).toBeGreaterThanOrEqual(1);
      expect(await page.$$eval('#breakdown-bar rect', (r) => r.length)).toBeGreaterThanOrEqual(1);
      const html = await page.content();
      const config = (await page.textContent('#config')) ?? '';
      expect(config).toContain('"runId"');
      if (control) {
        expect(html).not.toContain('hunter2');
        // Redacted twice over (redactConfig, then the page's scrubbing): the host stays, the password never shows.
        expect(config).toContain('"url": "redis://:[REDACTED]@redis.internal:6379"');
      }

      await page.screenshot({ path: join(artifacts, `run-page-${kind}.png`), fullPage: true });
      expect((await stat(join(artifacts, `run-page-${kind}.png`))).size).toBeGreaterThan(10_000);

      if (control) {
        // The end of the run: a clear finished state, ETA settled.
        await control.done;
        await page.waitForSelector('#phase[data-phase="finished"]', { timeout: 30_000 });
        expect(await page.textContent('#phase')).toBe('finished');
        expect(await page.textContent('#step')).toBe(`${control.steps} / ${control.steps}`);
        await page.screenshot({ path: join(artifacts, `run-page-${kind}-finished.png`), fullPage: true });
        // A failure is shown with its reason.
        control.history.fail(new Error('lost the connection to redis://:hunter2@redis.internal:6379'));
        await page.waitForSelector('#phase[data-phase="failed"]', { timeout: 15_000 });
        const message = (await page.textContent('#phase-message')) ?? '';
        expect(message).toContain('lost the connection');
        expect(message).not.toContain('hunter2');
      }
      expect(outside).toEqual([]);
      expect(problems).toEqual([]);
      await page.close();
    });

    it('says so when the coordinator stops answering', async () => {
      const page = await browser.newPage();
      await page.goto(target.url);
      await page.waitForFunction(loaded);
      await target.close();
      await page.waitForSelector('#connection.lost', { timeout: 20_000 });
      expect(await page.textContent('#connection')).toMatch(/^no answer from the coordinator since /);
      await page.close();
    });
  });
}
