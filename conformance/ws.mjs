#!/usr/bin/env node
// graphql-transport-ws conformance for Arena's /graphql/ws, per graphql-ws's
// PROTOCOL.md: every row with the raw `ws` client (which can send what a
// client library never would), then the rows a client can meet with the
// `graphql-ws` client itself (4408, 4403, 4409, keep-alive pongs, complete
// both ways, the operation cap) and its happy path; plus the legacy
// `graphql-ws` subprotocol (subscriptions-transport-ws).
//
//   node ws.mjs [HTTP_URL]          (or ARENA_URL=http://127.0.0.1:8123/graphql)
//
// The WebSocket URL is <HTTP_URL>/ws unless ARENA_WS_URL is set. The server's
// init timeout is taken from ARENA_WS_INIT_TIMEOUT_MS (default 3000), the
// same variable the server reads. One line per test; exits 1 on any failure.

import WebSocket from 'ws';
import { createClient, CloseCode } from 'graphql-ws';
import { ArenaHttp, battleUntilSeen, httpUrl, wsUrl, withTimeout } from './lib/arena.mjs';

const HTTP_URL = httpUrl(process.argv[2]);
const WS_URL = wsUrl(HTTP_URL);
const INIT_TIMEOUT_MS = Number(process.env.ARENA_WS_INIT_TIMEOUT_MS || 3000);
const STEP_MS = 5000; // bound on any single expected event
const TEST_MS = INIT_TIMEOUT_MS + 20_000; // bound on a whole test
const MAX_CLOSE_REASON = 123; // a close frame's payload is ≤ 125 bytes: 2 for the code

const SUBSCRIPTION = 'subscription { battleResults { id winner { name } loser { name } } }';

// ---------------------------------------------------------------------------
// A raw connection that records every message and how it closed.

class Raw {
  constructor(protocol = 'graphql-transport-ws') {
    this.ws = new WebSocket(WS_URL, protocol);
    this.messages = [];
    this.errors = [];
    this.listeners = new Set();
    this.closeInfo = null;
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', resolve);
      this.ws.once('unexpected-response', (_req, res) =>
        reject(new Error(`upgrade refused: HTTP ${res.statusCode}`)),
      );
      this.ws.once('error', reject);
    });
    this.closed = new Promise((resolve) => {
      this.ws.on('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString(), bytes: reason.length };
        resolve(this.closeInfo);
        for (const l of this.listeners) l();
      });
    });
    this.ws.on('error', (err) => this.errors.push(err.message));
    this.ws.on('message', (data, isBinary) => {
      let msg;
      try {
        msg = JSON.parse(data.toString());
      } catch {
        msg = { unparsable: data.toString(), isBinary };
      }
      this.messages.push(msg);
      for (const l of this.listeners) l();
    });
  }

  static async open(protocol) {
    const raw = new Raw(protocol);
    await withTimeout(raw.opened, STEP_MS, `open ${WS_URL}`);
    if (protocol && raw.ws.protocol !== protocol) {
      raw.ws.terminate();
      throw new Error(`server chose subprotocol "${raw.ws.protocol}", asked for "${protocol}"`);
    }
    return raw;
  }

  send(msg) {
    this.ws.send(typeof msg === 'string' ? msg : JSON.stringify(msg));
  }

  /** Resolves with the first message (from `from` on) matching `pred`. */
  next(pred, what, ms = STEP_MS, from = 0) {
    return withTimeout(
      new Promise((resolve, reject) => {
        const check = () => {
          const hit = this.messages.slice(from).find(pred);
          if (hit) return done(() => resolve(hit));
          if (this.closeInfo) {
            return done(() =>
              reject(new Error(`closed while waiting for ${what}: ${describeClose(this)}`)),
            );
          }
        };
        const done = (f) => {
          this.listeners.delete(check);
          f();
        };
        this.listeners.add(check);
        check();
      }),
      ms,
      `${what} (got ${JSON.stringify(this.messages).slice(0, 200)})`,
    );
  }

  async init(payload) {
    this.send(payload === undefined ? { type: 'connection_init' } : { type: 'connection_init', payload });
    return this.next((m) => m.type === 'connection_ack', 'connection_ack');
  }

  end() {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) {
      this.ws.terminate();
    }
  }
}

function describeClose(raw) {
  const c = raw.closeInfo;
  if (!c) return 'still open';
  let s = `closed ${c.code}`;
  if (c.reason) s += ` "${c.reason.slice(0, 80)}${c.reason.length > 80 ? '…' : ''}"`;
  if (raw.errors.length) s += ` [client error: ${raw.errors.join('; ')}]`;
  return s;
}

/** Waits for the close and checks its code and that the reason fits a close frame. */
async function expectClose(raw, code, ms) {
  let info;
  try {
    info = await withTimeout(raw.closed, ms, 'close');
  } catch {
    throw new Error(`expected close ${code}, but the server had not closed after ${ms} ms`);
  }
  if (info.code !== code) {
    throw new Error(`expected close ${code}, got ${describeClose(raw)}`);
  }
  if (info.bytes > MAX_CLOSE_REASON) {
    throw new Error(`close ${code} but its reason is ${info.bytes} bytes (> ${MAX_CLOSE_REASON})`);
  }
  return `${info.code} "${info.reason}"`;
}

// ---------------------------------------------------------------------------
// Tests: each returns a short detail for the report line, or throws.

const tests = [];
const test = (name, fn) => tests.push({ name, fn });

test(`no connection_init within ${INIT_TIMEOUT_MS} ms → 4408`, async (cleanup) => {
  const raw = await Raw.open();
  cleanup(() => raw.end());
  return expectClose(raw, CloseCode.ConnectionInitialisationTimeout, INIT_TIMEOUT_MS + STEP_MS);
});

test('subscribe before connection_ack → 4401', async (cleanup) => {
  const raw = await Raw.open();
  cleanup(() => raw.end());
  raw.send({ id: '1', type: 'subscribe', payload: { query: SUBSCRIPTION } });
  return expectClose(raw, CloseCode.Unauthorized, STEP_MS);
});

test('invalid message → 4400 with a reason that fits a close frame', async (cleanup) => {
  // Each variant on a fresh connection: not JSON at all, an unknown type, and
  // a subscribe without its payload (the last two after the ack).
  const variants = [
    ['not JSON, before init', false, 'this is not json'],
    ['unknown type, after ack', true, { type: 'nonsense' }],
    ['subscribe without payload, after ack', true, { id: '1', type: 'subscribe' }],
  ];
  const out = [];
  const bad = [];
  for (const [label, ack, msg] of variants) {
    const raw = await Raw.open();
    cleanup(() => raw.end());
    if (ack) await raw.init();
    raw.send(msg);
    try {
      out.push(`${label}: ${await expectClose(raw, CloseCode.BadRequest, STEP_MS)}`);
    } catch (err) {
      bad.push(`${label}: ${err.message}`);
    }
    raw.end();
  }
  if (bad.length) throw new Error(bad.join(' | '));
  return out.join(' | ');
});

test('duplicate subscription id → 4409', async (cleanup) => {
  const raw = await Raw.open();
  cleanup(() => raw.end());
  await raw.init();
  raw.send({ id: 'dup', type: 'subscribe', payload: { query: SUBSCRIPTION } });
  raw.send({ id: 'dup', type: 'subscribe', payload: { query: SUBSCRIPTION } });
  return expectClose(raw, CloseCode.SubscriberAlreadyExists, STEP_MS);
});

test('bad credential in connection_init → 4403', async (cleanup) => {
  const raw = await Raw.open();
  cleanup(() => raw.end());
  raw.send({ type: 'connection_init', payload: { authorization: 'Bearer nope' } });
  return expectClose(raw, CloseCode.Forbidden, STEP_MS);
});

test('second connection_init → 4429', async (cleanup) => {
  const raw = await Raw.open();
  cleanup(() => raw.end());
  await raw.init();
  raw.send({ type: 'connection_init' });
  return expectClose(raw, CloseCode.TooManyInitialisationRequests, STEP_MS);
});

test('ping → pong', async (cleanup) => {
  const raw = await Raw.open();
  cleanup(() => raw.end());
  await raw.init();
  const from = raw.messages.length;
  raw.send({ type: 'ping', payload: { n: 1 } });
  const pong = await raw.next((m) => m.type === 'pong', 'pong', STEP_MS, from);
  return `got ${JSON.stringify(pong)}`;
});

test('graphql-ws client receives a battle started over HTTP (Bearer in connectionParams)', async (cleanup) => {
  const http = new ArenaHttp(HTTP_URL);
  const fight = await http.readyRing('ws');
  const closes = [];
  const client = createClient({
    url: WS_URL,
    webSocketImpl: WebSocket,
    connectionParams: { authorization: `Bearer ${http.token}` },
    retryAttempts: 0,
    lazy: true,
    on: { closed: (e) => closes.push(`${e.code} ${e.reason}`) },
  });
  cleanup(() => client.dispose());

  const received = new Map(); // battle id → result
  const listeners = new Set();
  let failure = null;
  const connected = new Promise((resolve) => client.on('connected', resolve));
  const unsubscribe = client.subscribe(
    { query: SUBSCRIPTION },
    {
      next: (result) => {
        if (result.errors) failure = `errors: ${JSON.stringify(result.errors)}`;
        const b = result.data?.battleResults;
        if (b) received.set(b.id, b);
        for (const l of listeners) l();
      },
      error: (err) => {
        failure = `subscription error: ${err?.code ? `close ${err.code} ${err.reason}` : JSON.stringify(err?.message ?? err)}`;
        for (const l of listeners) l();
      },
      complete: () => {},
    },
  );
  cleanup(unsubscribe);
  await withTimeout(connected, STEP_MS, `graphql-ws connect (closes: ${closes.join(', ')})`);

  const seen = (id, ms) =>
    new Promise((resolve) => {
      const check = () => {
        if (received.has(id) || failure) done(received.has(id));
      };
      const timer = setTimeout(() => done(false), ms);
      const done = (v) => {
        clearTimeout(timer);
        listeners.delete(check);
        resolve(v);
      };
      listeners.add(check);
      check();
    });
  const { battle, attempts } = await battleUntilSeen(fight, async (id, ms) => {
    const ok = await seen(id, ms);
    if (failure) throw new Error(failure);
    return ok;
  });
  const got = received.get(battle.id);
  if (got.winner.name !== battle.winner.name || got.loser.name !== battle.loser.name) {
    throw new Error(`event ${JSON.stringify(got)} does not match battle ${JSON.stringify(battle)}`);
  }
  return `battle ${battle.id}: ${got.winner.name} beat ${got.loser.name}` +
    (attempts > 1 ? ` (first ${attempts - 1} battle(s) after subscribe were not delivered)` : '');
});

// ---------------------------------------------------------------------------
// The same rows as the graphql-ws client meets them (the ones a client can cause).

/** A graphql-ws client that never retries and records how it closed. */
function gqlClient(cleanup, options = {}) {
  const closes = [];
  const pongs = [];
  const client = createClient({
    url: WS_URL,
    webSocketImpl: WebSocket,
    retryAttempts: 0,
    lazy: true,
    ...options,
    on: {
      closed: (e) => closes.push({ code: e.code, reason: e.reason }),
      pong: (received, payload) => pongs.push({ received, payload }),
      ...(options.on || {}),
    },
  });
  cleanup(() => client.dispose());
  return { client, closes, pongs };
}

/** Subscribes with `client`; resolves with how the sink ended: {complete} or {error}. */
function run(client, payload, onNext = () => {}) {
  let unsubscribe;
  const done = new Promise((resolve) => {
    unsubscribe = client.subscribe(payload, {
      next: onNext,
      error: (error) => resolve({ error }),
      complete: () => resolve({ complete: true }),
    });
  });
  return { done, unsubscribe };
}

function closeCodeOf(error) {
  return error && typeof error === 'object' && 'code' in error ? error.code : undefined;
}

async function metric(name) {
  const res = await fetch(new URL('/metrics', HTTP_URL), { signal: AbortSignal.timeout(STEP_MS) });
  const line = (await res.text()).split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : 0;
}

async function until(cond, what, ms = STEP_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test(`graphql-ws client: connectionParams never ready, no connection_init → closed 4408`, async (cleanup) => {
  const { client, closes } = gqlClient(cleanup, { connectionParams: () => new Promise(() => {}) });
  const { done } = run(client, { query: SUBSCRIPTION });
  const end = await withTimeout(done, INIT_TIMEOUT_MS + STEP_MS, 'the subscription to end');
  const code = closeCodeOf(end.error) ?? closes[0]?.code;
  if (code !== CloseCode.ConnectionInitialisationTimeout) {
    throw new Error(`expected 4408, got ${JSON.stringify(end)} closes ${JSON.stringify(closes)}`);
  }
  return `closed ${code} "${closes[0]?.reason ?? ''}"`;
});

test('graphql-ws client: a bad credential in connectionParams → closed 4403', async (cleanup) => {
  const { client, closes } = gqlClient(cleanup, { connectionParams: { authorization: 'Bearer nope' } });
  const { done } = run(client, { query: SUBSCRIPTION });
  const end = await withTimeout(done, STEP_MS, 'the subscription to end');
  const code = closeCodeOf(end.error) ?? closes[0]?.code;
  if (code !== CloseCode.Forbidden) throw new Error(`expected 4403, got ${JSON.stringify(closes)}`);
  return `closed ${code} "${closes[0]?.reason ?? ''}"`;
});

test('graphql-ws client: two subscriptions under one id → closed 4409', async (cleanup) => {
  const { client, closes } = gqlClient(cleanup, { generateID: () => 'same-id' });
  const first = run(client, { query: SUBSCRIPTION });
  const second = run(client, { query: SUBSCRIPTION });
  cleanup(first.unsubscribe);
  cleanup(second.unsubscribe);
  await withTimeout(Promise.race([first.done, second.done]), STEP_MS, 'a subscription to end');
  await until(() => closes.length > 0, 'the close');
  if (closes[0].code !== CloseCode.SubscriberAlreadyExists) {
    throw new Error(`expected 4409, got ${JSON.stringify(closes)}`);
  }
  return `closed ${closes[0].code} "${closes[0].reason}"`;
});

test('graphql-ws client: keepAlive pings get pongs', async (cleanup) => {
  const { client, pongs } = gqlClient(cleanup, { keepAlive: 200 });
  const { unsubscribe } = run(client, { query: SUBSCRIPTION });
  cleanup(unsubscribe);
  await until(() => pongs.some((p) => p.received), 'a pong from the server');
  return `${pongs.filter((p) => p.received).length} pong(s) received`;
});

test('graphql-ws client: a query ends with complete; unsubscribe stops the subscription on the server', async (cleanup) => {
  const { client } = gqlClient(cleanup);
  const results = [];
  const query = run(client, { query: '{ meals(first: 1) { totalCount } }' }, (r) => results.push(r));
  const end = await withTimeout(query.done, STEP_MS, 'the query to complete');
  if (!end.complete || results.length !== 1 || !results[0].data) {
    throw new Error(`query ended ${JSON.stringify(end)} after ${JSON.stringify(results)}`);
  }
  // Operations of the earlier tests' connections end as those close.
  await until(async () => (await metric('arena_ws_operations')) === 0, 'no operation left running');
  const before = 0;
  const sub = run(client, { query: SUBSCRIPTION });
  await until(async () => (await metric('arena_ws_operations')) === before + 1, 'the subscription to run');
  sub.unsubscribe();
  await until(async () => (await metric('arena_ws_operations')) === before, 'the server to stop it');
  return `query: next + complete; subscription: running ${before + 1} → ${before} after unsubscribe`;
});

test('graphql-ws client: the subscribe over ARENA_WS_MAX_OPERATIONS gets RATE_LIMITED, the others go on', async (cleanup) => {
  const cap = Number(process.env.ARENA_WS_MAX_OPERATIONS || 100);
  const http = new ArenaHttp(HTTP_URL);
  const fight = await http.readyRing('cap');
  const { client } = gqlClient(cleanup);
  const seen = new Set();
  const listeners = new Set();
  const subs = [];
  for (let i = 0; i < cap; i++) {
    const s = run(client, { query: SUBSCRIPTION }, (r) => {
      const id = r.data?.battleResults?.id;
      if (id) seen.add(id);
      for (const l of listeners) l();
    });
    subs.push(s);
    cleanup(s.unsubscribe);
  }
  const over = run(client, { query: SUBSCRIPTION });
  const end = await withTimeout(over.done, STEP_MS, 'the refusal');
  const code = Array.isArray(end.error) ? end.error[0]?.extensions?.code : undefined;
  if (code !== 'RATE_LIMITED') throw new Error(`subscribe #${cap + 1} ended ${JSON.stringify(end).slice(0, 200)}`);
  const { battle } = await battleUntilSeen(fight, (id, ms) =>
    new Promise((resolve) => {
      const check = () => seen.has(id) && done(true);
      const timer = setTimeout(() => done(false), ms);
      const done = (v) => {
        clearTimeout(timer);
        listeners.delete(check);
        resolve(v);
      };
      listeners.add(check);
      check();
    }),
  );
  return `#${cap + 1} refused with RATE_LIMITED; battle ${battle.id} still delivered to the first ${cap}`;
});

test('legacy graphql-ws subprotocol: connection_init / start / data / stop', async (cleanup) => {
  const http = new ArenaHttp(HTTP_URL);
  const fight = await http.readyRing('legacy');
  const raw = await Raw.open('graphql-ws');
  cleanup(() => raw.end());
  raw.send({ type: 'connection_init', payload: {} });
  await raw.next((m) => m.type === 'connection_ack', 'connection_ack');
  raw.send({ id: '1', type: 'start', payload: { query: SUBSCRIPTION } });
  const { battle, attempts } = await battleUntilSeen(fight, async (id, ms) => {
    try {
      await raw.next(
        (m) => m.type === 'data' && m.id === '1' && m.payload?.data?.battleResults?.id === id,
        `data for battle ${id}`,
        ms,
      );
      return true;
    } catch (err) {
      if (raw.closeInfo) throw err;
      const e = raw.messages.find((m) => m.type === 'error' || m.payload?.errors);
      if (e) throw new Error(`server answered ${JSON.stringify(e)}`);
      return false;
    }
  });
  raw.send({ id: '1', type: 'stop' });
  raw.send({ type: 'connection_terminate' });
  return `data for battle ${battle.id}` + (attempts > 1 ? ` after ${attempts} battles` : '');
});

// ---------------------------------------------------------------------------
// Runner: sequential, one line per test, every resource released after each.

console.log(`graphql-transport-ws conformance against ${WS_URL}`);
let passed = 0;
let failed = 0;
for (const { name, fn } of tests) {
  const cleanups = [];
  const started = Date.now();
  try {
    const detail = await withTimeout(fn((f) => cleanups.push(f)), TEST_MS, name);
    passed++;
    console.log(`ok   ${name} — ${detail} (${Date.now() - started} ms)`);
  } catch (err) {
    failed++;
    console.log(`FAIL ${name} — ${err.message} (${Date.now() - started} ms)`);
  } finally {
    for (const f of cleanups.reverse()) {
      try {
        f();
      } catch {
        // already closed
      }
    }
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
