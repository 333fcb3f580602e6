#!/usr/bin/env node
// End-to-end test of Arena's GraphiQL page in headless Chromium (Debian's
// /usr/bin/chromium driven by playwright-core; no browser is downloaded).
//
//   node graphiql.mjs [--url http://127.0.0.1:8123/graphql] [--page /]
//                     [--assets https://unpkg.com] [--template FILE]
//                     [--screenshot ../target/graphiql.png]
//
// Every request to the assets base URL (the CDN, default https://unpkg.com, or
// ARENA_GRAPHIQL_ASSETS) is answered from this folder's node_modules, at the
// exact version the URL asks for, so the test runs offline. Any other request
// that leaves the Arena origin is blocked and fails the test.
//
// --template FILE serves FILE (with __ARENA_ASSETS__ replaced by the assets
// base) at <origin>/__graphiql_dev, on Arena's own origin, and opens that
// instead of --page: for working on the template before the server serves it.
//
// The test: the page loads as a browser asks for it (Accept: text/html), its
// title is Arena, it shows a hint on Authorization and the headers editor;
// the default query runs and the result pane shows meals; then, with the
// headers editor set to a Bearer token, a `battleResults` subscription started
// from the page receives a battle that this process starts over HTTP, and the
// WebSocket's connection_init carries {"authorization": "Bearer …"}.
// A screenshot is saved either way.

import { mkdtemp, mkdir, readFile, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { EventEmitter } from 'node:events';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';
import { ArenaHttp, battleUntilSeen, httpUrl, originOf, unique } from './lib/arena.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    page: { type: 'string' },
    assets: { type: 'string' },
    template: { type: 'string' },
    screenshot: { type: 'string' },
  },
});

const HTTP_URL = httpUrl(args.url);
const ORIGIN = originOf(HTTP_URL);
const ASSETS = (args.assets || process.env.ARENA_GRAPHIQL_ASSETS || 'https://unpkg.com').replace(/\/+$/, '');
const TEMPLATE = args.template || process.env.ARENA_GRAPHIQL_TEMPLATE;
const DEV_PATH = '/__graphiql_dev';
const PAGE = new URL(
  args.page || process.env.ARENA_GRAPHIQL_PAGE || (TEMPLATE ? DEV_PATH : '/'),
  ORIGIN,
).toString();
const SCREENSHOT = path.resolve(
  args.screenshot || process.env.ARENA_GRAPHIQL_SCREENSHOT || path.join(here, '..', 'target', 'graphiql.png'),
);
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const STEP_MS = 15_000;
const NODE_MODULES = path.join(here, 'node_modules');

const SUBSCRIPTION = 'subscription { battleResults { id winner { name } loser { name } } }';

const CONTENT_TYPES = {
  '.js': 'application/javascript; charset=utf-8',
  '.mjs': 'application/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.woff2': 'font/woff2',
  '.woff': 'font/woff',
  '.ttf': 'font/ttf',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
};

// ---------------------------------------------------------------------------
// Steps: each prints one line; the first failure stops the test.

let passed = 0;
let failed = 0;
// A failed step with { fatal: true } ends the test; the others let it go on.
async function step(name, fn, { fatal = false } = {}) {
  try {
    const detail = await fn();
    passed++;
    console.log(`ok   ${name}${detail ? ` — ${detail}` : ''}`);
  } catch (err) {
    failed++;
    console.log(`FAIL ${name} — ${err.message.split('\n')[0]}`);
    if (fatal) throw err;
  }
}

const served = []; // assets answered from node_modules
const problems = []; // asset misses and blocked requests
const consoleErrors = [];

/** <assets>/<name>@<version>/<file> → node_modules/<name>/<file>, same version only. */
async function serveAsset(route, url) {
  const rest = decodeURIComponent(url.slice(ASSETS.length)); // "/graphiql@4.1.2/graphiql.min.js"
  const m = /^\/((?:@[^/]+\/)?[^/@]+)@([^/]+)\/(.+)$/.exec(rest.split(/[?#]/)[0]);
  if (!m) {
    problems.push(`asset URL without a version: ${url}`);
    return route.fulfill({ status: 404, body: 'no version in URL' });
  }
  const [, name, version, file] = m;
  const dir = path.join(NODE_MODULES, name);
  const pkgFile = path.join(dir, 'package.json');
  if (!existsSync(pkgFile)) {
    problems.push(`asset package not in conformance/package.json: ${name}@${version}`);
    return route.fulfill({ status: 404, body: 'package not installed' });
  }
  const installed = JSON.parse(await readFile(pkgFile, 'utf8')).version;
  // An exact version, or a major/minor prefix of the installed one ("4" → 4.1.2),
  // as a CDN would resolve it.
  if (installed !== version && !installed.startsWith(`${version}.`)) {
    problems.push(`asset ${name}@${version} asked for, ${installed} installed: ${url}`);
    return route.fulfill({ status: 404, body: 'version not installed' });
  }
  const target = path.resolve(dir, file);
  if (!target.startsWith(dir + path.sep) || !existsSync(target)) {
    problems.push(`asset file missing from ${name}@${version}: ${file}`);
    return route.fulfill({ status: 404, body: 'file not in package' });
  }
  served.push(`${name}@${version}/${file}`);
  return route.fulfill({
    status: 200,
    headers: {
      'content-type': CONTENT_TYPES[path.extname(target)] || 'application/octet-stream',
      'access-control-allow-origin': '*',
    },
    body: await readFile(target),
  });
}

async function main() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} not found: apt-get install -y chromium`);
  }
  console.log(`GraphiQL end-to-end: page ${PAGE}, API ${HTTP_URL}, assets ${ASSETS} → node_modules`);
  const template = TEMPLATE
    ? (await readFile(TEMPLATE, 'utf8')).replaceAll('__ARENA_ASSETS__', ASSETS)
    : null;

  const userDataDir = await mkdtemp(path.join(tmpdir(), 'arena-graphiql-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      // A page answered by route.fulfill() has no address, so Chromium's Local
      // Network Access checks treat it as public and block its WebSocket to
      // the loopback Arena. Only the --template page is answered that way.
      ...(template ? ['--disable-features=LocalNetworkAccessChecks'] : []),
    ],
    viewport: { width: 1400, height: 900 },
  });
  let page;
  try {
    await context.route('**/*', async (route) => {
      const url = route.request().url();
      if (url.startsWith(`${ASSETS}/`)) return serveAsset(route, url);
      if (url.startsWith('data:') || url.startsWith('blob:')) return route.continue();
      const u = new URL(url);
      if (u.origin === ORIGIN) {
        if (template && u.pathname === DEV_PATH) {
          return route.fulfill({
            status: 200,
            headers: { 'content-type': 'text/html; charset=utf-8' },
            body: template,
          });
        }
        return route.continue();
      }
      problems.push(`blocked a request off the Arena origin and the assets base: ${url}`);
      return route.abort('blockedbyclient');
    });

    page = context.pages()[0] || (await context.newPage());
    page.on('console', (msg) => {
      if (msg.type() === 'error') consoleErrors.push(msg.text());
    });
    page.on('pageerror', (err) => consoleErrors.push(`pageerror: ${err.message}`));

    // WebSocket frames the page sends and receives, per socket.
    const sockets = [];
    const socketEvents = new EventEmitter();
    // Resolves with found() once truthy; rejects when failed() or after ms.
    const waitForSockets = (found, failed, ms) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const hit = found();
          if (hit) return done(() => resolve(hit));
          if (failed()) return done(() => reject(new Error('socket closed')));
        };
        const timer = setTimeout(() => done(() => reject(new Error(`${ms} ms passed`))), ms);
        const done = (f) => {
          clearTimeout(timer);
          socketEvents.off('change', check);
          f();
        };
        socketEvents.on('change', check);
        check();
      });
    page.on('websocket', (ws) => {
      const rec = { url: ws.url(), sent: [], received: [], closed: false };
      sockets.push(rec);
      socketEvents.emit('change');
      const parse = (p) => {
        try {
          return JSON.parse(typeof p === 'string' ? p : p.toString());
        } catch {
          return { raw: String(p) };
        }
      };
      ws.on('framesent', (f) => {
        rec.sent.push(parse(f.payload));
        socketEvents.emit('change');
      });
      ws.on('framereceived', (f) => {
        rec.received.push(parse(f.payload));
        socketEvents.emit('change');
      });
      ws.on('close', () => {
        rec.closed = true;
        socketEvents.emit('change');
      });
    });

    const editorValue = (selector) =>
      page.evaluate((sel) => {
        const el = document.querySelector(sel);
        return el && el.CodeMirror ? el.CodeMirror.getValue() : null;
      }, selector);
    const setEditor = (selector, value) =>
      page.evaluate(
        ([sel, v]) => {
          const el = document.querySelector(sel);
          if (!el || !el.CodeMirror) throw new Error(`no editor at ${sel}`);
          el.CodeMirror.setValue(v);
        },
        [selector, value],
      );
    const QUERY = '.graphiql-query-editor .CodeMirror';
    const RESPONSE = '.graphiql-response .CodeMirror';
    const HEADERS_TOOL = 'section.graphiql-editor-tool[aria-label="Headers"]';
    const HEADERS = `${HEADERS_TOOL} .graphiql-editor:not(.hidden) .CodeMirror`;
    // Opens the headers editor as a person would when it is not open yet.
    const openHeaders = async () => {
      if (await page.locator(HEADERS_TOOL).isVisible()) return;
      await page.locator('.graphiql-editor-tools').getByRole('button', { name: 'Headers' }).click();
      await page.waitForSelector(HEADERS, { timeout: STEP_MS });
    };
    const responseJson = async () => {
      const text = await editorValue(RESPONSE);
      try {
        return text ? JSON.parse(text) : null;
      } catch {
        return null;
      }
    };

    await step('page loads as HTML for a browser', async () => {
      const res = await page.goto(PAGE, { waitUntil: 'load', timeout: STEP_MS });
      if (!res) throw new Error('no response');
      const ct = res.headers()['content-type'] || '';
      if (res.status() !== 200 || !ct.includes('text/html')) {
        throw new Error(`HTTP ${res.status()} content-type ${ct}`);
      }
      return `HTTP 200 ${ct}`;
    }, { fatal: true });

    await step('title is "Arena"', async () => {
      const title = await page.title();
      if (title !== 'Arena') throw new Error(`title is "${title}"`);
    });

    await step('GraphiQL renders from the mirrored assets', async () => {
      await page.waitForSelector(QUERY, { timeout: STEP_MS }).catch(() => {
        throw new Error(
          `GraphiQL did not render; problems: ${problems.join('; ') || 'none'}; console: ${consoleErrors.join(' | ').slice(0, 300)}`,
        );
      });
      return `served from node_modules: ${[...new Set(served)].join(', ')}`;
    }, { fatal: true });

    await step('Authorization hint and headers editor are visible', async () => {
      const hint = page.getByText(/Authorization/).first();
      if (!(await hint.isVisible())) throw new Error('no visible text mentions Authorization');
      const hintText = (await hint.innerText()).replace(/\s+/g, ' ');
      if (!/Bearer/.test(hintText)) throw new Error(`the hint does not mention Bearer: ${hintText}`);
      const headers = page.locator('section.graphiql-editor-tool[aria-label="Headers"]');
      if (!(await headers.isVisible())) throw new Error('the headers editor is not open');
      return `hint: "${hintText.slice(0, 90)}…"`;
    });

    await step('default query runs and the result pane shows meals', async () => {
      const query = await editorValue(QUERY);
      if (!query || !/\{/.test(query)) throw new Error(`query editor holds ${JSON.stringify(query)}`);
      await page.click('.graphiql-execute-button');
      await page.waitForFunction(
        (sel) => {
          const el = document.querySelector(sel);
          return el && el.CodeMirror && /"(data|errors)"/.test(el.CodeMirror.getValue());
        },
        RESPONSE,
        { timeout: STEP_MS },
      );
      const result = await responseJson();
      if (!result || result.errors || !result.data) {
        throw new Error(`result pane: ${((await editorValue(RESPONSE)) ?? '').replace(/\s+/g, ' ').slice(0, 300)}`);
      }
      const summary = JSON.stringify(result.data).slice(0, 120);
      return `${summary}${summary.length >= 120 ? '…' : ''}`;
    });

    await step('subscription from the page receives a battle started over HTTP', async () => {
      const http = new ArenaHttp(HTTP_URL);
      const fight = await http.readyRing('graphiql');
      const auth = `Bearer ${http.token}`;
      await openHeaders();
      await setEditor(HEADERS, JSON.stringify({ Authorization: auth }, null, 2));
      await setEditor(QUERY, `${SUBSCRIPTION}\n`);
      const before = sockets.length;
      await page.click('.graphiql-execute-button');

      // The page's socket: connection_init with the token, then the ack.
      const mine = () => sockets.slice(before);
      const ws = await waitForSockets(
        () => mine().find((x) => x.received.some((m) => m.type === 'connection_ack')),
        () => mine().some((x) => x.closed),
        STEP_MS,
      ).catch(async (err) => {
        const pane = ((await editorValue(RESPONSE)) ?? '').replace(/\s+/g, ' ').slice(0, 200);
        throw new Error(
          `no connection_ack on the page's WebSocket: ${err.message}; result pane: ${pane} (${mine().map((x) => `${x.url} sent ${JSON.stringify(x.sent)} got ${JSON.stringify(x.received)}${x.closed ? ' closed' : ''}`).join('; ') || 'no socket opened'}); console: ${consoleErrors.join(' | ').slice(0, 300)}`,
        );
      });
      const init = ws.sent.find((m) => m.type === 'connection_init');
      if (!init || init.payload?.authorization !== auth) {
        throw new Error(`connection_init payload is ${JSON.stringify(init?.payload)}, expected {"authorization": "Bearer …"}`);
      }

      const { battle, attempts } = await battleUntilSeen(fight, async (id, ms) =>
        page
          .waitForFunction(
            ([sel, want]) => {
              const el = document.querySelector(sel);
              if (!el || !el.CodeMirror) return false;
              try {
                return JSON.parse(el.CodeMirror.getValue())?.data?.battleResults?.id === want;
              } catch {
                return false;
              }
            },
            [RESPONSE, id],
            { timeout: ms },
          )
          .then(() => true, () => false),
      );
      const got = (await responseJson()).data.battleResults;
      if (got.winner.name !== battle.winner.name) {
        throw new Error(`result pane ${JSON.stringify(got)} does not match ${JSON.stringify(battle)}`);
      }
      return `${ws.url}: connection_init {"authorization":"Bearer …"}; battle ${battle.id} shown (${got.winner.name} beat ${got.loser.name})` +
        (attempts > 1 ? `, after ${attempts} battles` : '');
    });

    await step('a live query on the page shows a price another client changed', async () => {
      // Stop the running subscription first (the execute button stops what runs).
      if (await page.locator('.graphiql-execute-button[aria-label*="Stop"]').count()) {
        await page.click('.graphiql-execute-button');
      }
      const http = new ArenaHttp(HTTP_URL);
      await http.signUp('graphiql_live');
      const meal = await http.createMeal(`live-${unique()}`, 'graphiql', 10, 'LOW');
      await setEditor(QUERY, `query @live { meal(id: "${meal.id}") { id name price } }\n`);
      const priceShown = (want, ms) =>
        page.waitForFunction(
          ([sel, want]) => {
            const el = document.querySelector(sel);
            if (!el || !el.CodeMirror) return false;
            try {
              return JSON.parse(el.CodeMirror.getValue())?.data?.meal?.price === want;
            } catch {
              return false;
            }
          },
          [RESPONSE, want],
          { timeout: ms },
        );
      await page.click('.graphiql-execute-button');
      await priceShown(10, STEP_MS).catch(async () => {
        throw new Error(`first result not shown: ${((await editorValue(RESPONSE)) ?? '').replace(/\s+/g, ' ').slice(0, 200)}`);
      });
      const t0 = Date.now();
      await http.gql('mutation($id: ID!) { updateMeal(id: $id, input: { price: 42 }) { price } }', { id: meal.id });
      const acked = Date.now();
      await priceShown(42, STEP_MS).catch(async () => {
        throw new Error(`the update was not shown: ${((await editorValue(RESPONSE)) ?? '').replace(/\s+/g, ' ').slice(0, 200)}`);
      });
      const shown = Date.now();
      await page.click('.graphiql-execute-button'); // stop it
      return `meal ${meal.id}: 10 → 42 on screen ${shown - acked} ms after the write was acknowledged (write took ${acked - t0} ms)`;
    });

    await step('a query with @defer and @stream shows its whole result once every part came', async () => {
      const http = new ArenaHttp(HTTP_URL);
      await http.signUp('graphiql_defer');
      const cuisine = `defer-${unique()}`;
      for (const [name, price] of [['a', 1], ['b', 2], ['c', 3]]) {
        await http.createMeal(name, cuisine, price, 'LOW');
      }
      const whole = await http.gql(
        'query($c: String!) { meals(first: 10, cuisine: $c) { nodes { name price } } }',
        { c: cuisine },
      );
      await setEditor(
        QUERY,
        `query { meals(first: 10, cuisine: "${cuisine}") { nodes @stream(initialCount: 1) { name ... @defer { price } } } }\n`,
      );
      await page.click('.graphiql-execute-button');
      const want = JSON.stringify(whole.meals.nodes);
      await page
        .waitForFunction(
          ([sel, want]) => {
            const el = document.querySelector(sel);
            if (!el || !el.CodeMirror) return false;
            try {
              return JSON.stringify(JSON.parse(el.CodeMirror.getValue())?.data?.meals?.nodes) === want;
            } catch {
              return false;
            }
          },
          [RESPONSE, want],
          { timeout: STEP_MS },
        )
        .catch(async () => {
          throw new Error(`result pane: ${((await editorValue(RESPONSE)) ?? '').replace(/\s+/g, ' ').slice(0, 300)}; want ${want}`);
        });
      return `3 meals, the first with the result and the rest streamed, prices deferred: ${want}`;
    });

    await step('no request left for the internet', async () => {
      if (problems.length) throw new Error(problems.join('; '));
      return `${served.length} asset requests answered from node_modules`;
    });
  } finally {
    if (page) {
      await mkdir(path.dirname(SCREENSHOT), { recursive: true });
      await page.screenshot({ path: SCREENSHOT }).then(
        () => console.log(`screenshot: ${SCREENSHOT}`),
        (err) => console.log(`screenshot failed: ${err.message}`),
      );
    }
    await context.close();
    await rm(userDataDir, { recursive: true, force: true });
  }
}

try {
  await main();
} catch (err) {
  if (!failed) {
    failed++;
    console.log(`FAIL setup — ${err.message.split('\n')[0]}`);
  }
  if (problems.length) console.log(`asset/network problems: ${problems.join('; ')}`);
  if (consoleErrors.length) console.log(`browser console errors: ${consoleErrors.join(' | ').slice(0, 600)}`);
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
