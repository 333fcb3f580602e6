#!/usr/bin/env node
// GraphQL over Server-Sent Events conformance for Arena's /graphql/stream, with
// the `graphql-sse` client (Node's global fetch) in both of its modes, distinct
// connections and `singleConnection: true`: a query agrees with POST /graphql,
// a mutation carries the client's Authorization header, a `@live` query
// follows an updateMeal made over plain HTTP by another user, a request error
// arrives as a GraphQL error with its code, and unsubscribing (the function
// `subscribe` returns, or `return()` on `iterate`'s iterator) stops a live
// query on the server (`arena_live_queries`). Plus a `@live` query over the
// WebSocket with the `graphql-ws` client.
//
//   node sse.mjs [HTTP_URL]         (or ARENA_URL=http://127.0.0.1:8123/graphql)
//
// The SSE URL is <HTTP_URL>/stream unless ARENA_SSE_URL is set; the WebSocket
// URL <HTTP_URL>/ws unless ARENA_WS_URL is. One line per test; exits 1 on any
// failure.

import { isDeepStrictEqual } from 'node:util';
import WebSocket from 'ws';
import { createClient as createSseClient } from 'graphql-sse';
import { createClient as createWsClient } from 'graphql-ws';
import {
  ArenaHttp,
  Recorder,
  brief,
  httpUrl,
  metric,
  sseUrl,
  unique,
  until,
  withTimeout,
  wsUrl,
} from './lib/arena.mjs';

const HTTP_URL = httpUrl(process.argv[2]);
const SSE_URL = sseUrl(HTTP_URL);
const WS_URL = wsUrl(HTTP_URL);
const STEP_MS = 5000; // bound on any single expected event
const TEST_MS = 30_000; // bound on a whole test

const MEALS = `query Meals($cuisine: String!) {
  meals(first: 10, cuisine: $cuisine) { totalCount nodes { id name cuisine price difficulty } }
}`;
const CREATE = `mutation Create($input: CreateMealInput!) {
  createMeal(input: $input) { id name cuisine price difficulty }
}`;
const LIVE = 'query Q($id: ID!) @live { meal(id: $id) { name price } }';
const BAD = '{ nope }';

// ---------------------------------------------------------------------------
// Fixtures: one user who owns the meals, another who changes them.

const owner = new ArenaHttp(HTTP_URL);
const other = new ArenaHttp(HTTP_URL);
const cuisine = `Sse${unique()}`;
const meals = [];

async function setUp() {
  await owner.signUp('sse');
  await other.signUp('sse_other');
  for (let i = 0; i < 12; i++) {
    meals.push(await owner.createMeal(`Sse meal ${i} ${cuisine}`, cuisine, 10 + i, i % 2 ? 'HIGH' : 'LOW'));
  }
}

/** A meal of its own for each test that changes one. */
let nextMeal = 0;
function freshMeal() {
  if (nextMeal >= meals.length) throw new Error('out of fixture meals');
  return meals[nextMeal++];
}

/** A price no meal has had yet, so a result that carries it is the changed one. */
let priceSeq = 0;
function newPrice() {
  priceSeq += 1;
  return 100 + priceSeq + 0.25;
}

// ---------------------------------------------------------------------------
// graphql-sse clients that never retry and log every request they make.

const MODES = [
  { name: 'distinct', singleConnection: false },
  { name: 'single', singleConnection: true },
];

function sseClient(cleanup, mode, options = {}) {
  const traffic = []; // "METHOD status" per request, for reports
  const fetchFn = async (input, init = {}) => {
    const method = init.method ?? 'GET';
    const token = init.headers?.['x-graphql-event-stream-token'];
    if (token) traffic.token = token;
    try {
      const res = await fetch(input, init);
      traffic.push(`${method} ${res.status}`);
      return res;
    } catch (err) {
      traffic.push(`${method} ${err.name}`);
      throw err;
    }
  };
  const client = createSseClient({
    url: SSE_URL,
    singleConnection: mode.singleConnection,
    retryAttempts: 0,
    fetchFn,
    ...options,
  });
  cleanup(() => client.dispose());
  return { client, traffic };
}

/** Runs one operation to its end; resolves with its results. */
function once(client, request, what) {
  const rec = new Recorder();
  client.subscribe(request, rec.sink);
  return rec.done(what, STEP_MS);
}

function bearer(http) {
  return { authorization: `Bearer ${http.token}` };
}

// ---------------------------------------------------------------------------
// Tests: each returns a short detail for the report line, or throws.

const tests = [];
const test = (name, fn) => tests.push({ name, fn });

for (const mode of MODES) {
  test(`${mode.name}: a query over SSE equals the same query over POST /graphql`, async (cleanup) => {
    const { client, traffic } = sseClient(cleanup, mode);
    const variables = { cuisine };
    const results = await once(client, { query: MEALS, variables }, 'the query');
    const plain = await owner.post(MEALS, variables, { token: null });
    if (plain.status !== 200 || !plain.body?.data) {
      throw new Error(`POST /graphql answered ${plain.status} ${plain.text.slice(0, 200)}`);
    }
    if (results.length !== 1) throw new Error(`expected one result, got ${brief(results)}`);
    if (!isDeepStrictEqual(results[0], plain.body)) {
      throw new Error(`SSE ${brief(results[0])} ≠ POST ${brief(plain.body)}`);
    }
    return `${results[0].data.meals.totalCount} meals, identical; requests ${traffic.join(', ')}`;
  });

  test(`${mode.name}: a mutation with the client's Authorization header (and without it: UNAUTHENTICATED)`, async (cleanup) => {
    const input = { name: `Sse created ${mode.name} ${unique()}`, cuisine, price: 42.5, difficulty: 'HIGH' };
    const anon = sseClient(cleanup, mode);
    const refused = await once(anon.client, { query: CREATE, variables: { input } }, 'the anonymous mutation');
    const code = refused[0]?.errors?.[0]?.extensions?.code;
    if (refused.length !== 1 || code !== 'UNAUTHENTICATED') {
      throw new Error(`without a credential: expected UNAUTHENTICATED, got ${brief(refused)}`);
    }
    const { client, traffic } = sseClient(cleanup, mode, { headers: bearer(owner) });
    const results = await once(client, { query: CREATE, variables: { input } }, 'the mutation');
    const made = results[0]?.data?.createMeal;
    if (results.length !== 1 || results[0].errors || !made) {
      throw new Error(`expected one result with createMeal, got ${brief(results)}`);
    }
    const { id, ...fields } = made;
    if (!isDeepStrictEqual(fields, input)) throw new Error(`created ${brief(made)} for ${brief(input)}`);
    const { meal } = await owner.gql('query($id: ID!) { meal(id: $id) { name } }', { id });
    if (meal?.name !== input.name) throw new Error(`meal ${id} over HTTP is ${brief(meal)}`);
    return `meal ${id} created; requests ${traffic.join(', ')}`;
  });

  test(`${mode.name}: a @live query yields its result, then the changed one after updateMeal over HTTP`, async (cleanup) => {
    const meal = freshMeal();
    const { client, traffic } = sseClient(cleanup, mode);
    const rec = new Recorder();
    cleanup(client.subscribe({ query: LIVE, variables: { id: meal.id } }, rec.sink));
    const [first] = await rec.until((r) => r.results.length >= 1 && r.results, 'the first result', STEP_MS);
    const before = await owner.gql('query($id: ID!) { meal(id: $id) { name price } }', { id: meal.id });
    if (!isDeepStrictEqual(first, { data: before })) {
      throw new Error(`first result ${brief(first)}, over HTTP ${brief(before)}`);
    }
    const price = newPrice();
    await other.updateMeal(meal.id, { price });
    await rec.until(
      (r) => r.results.some((x) => x.data?.meal?.price === price),
      `a result with price ${price}`,
      STEP_MS,
    );
    const bad = rec.results.find((x) => x.errors || x.data?.meal?.name !== meal.name);
    if (bad) throw new Error(`a result ${brief(bad)} among ${brief(rec.results)}`);
    return `price ${before.meal.price} → ${price} in ${rec.results.length} results; requests ${traffic.join(', ')}`;
  });

  test(`${mode.name}: a request error ({ nope }) arrives as errors with extensions.code BAD_USER_INPUT`, async (cleanup) => {
    const { client, traffic } = sseClient(cleanup, mode);
    const rec = new Recorder();
    client.subscribe({ query: BAD }, rec.sink);
    await rec.until((r) => r.ended, 'the operation to end', STEP_MS);
    let errors;
    let how;
    if (rec.error === undefined) {
      // Over the stream: one `next` with the errors (no data), then `complete`.
      if (rec.results.length !== 1) throw new Error(`expected one result, got ${brief(rec.results)}`);
      const [r] = rec.results;
      if (r.data != null) throw new Error(`a request error with data: ${brief(r)}`);
      errors = r.errors;
      how = 'a next event';
    } else {
      // Or (single connection mode) refused as GraphQL over HTTP says, which the
      // client reports as a NetworkError carrying the response.
      const res = rec.error?.response;
      if (!res) throw new Error(`the operation failed with ${brief(rec.error)}`);
      if (res.status !== 400) throw new Error(`refused with HTTP ${res.status}, expected 400`);
      // The client aborts its request before reporting the error (and, lazy, drops
      // its reservation), so the body it holds can no longer be read: send the same
      // request on a reservation of our own and read the answer.
      const put = await fetch(SSE_URL, { method: 'PUT' });
      if (put.status !== 201) throw new Error(`PUT answered ${put.status}`);
      const token = await put.text();
      const again = await fetch(SSE_URL, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-graphql-event-stream-token': token },
        body: JSON.stringify({ query: BAD, extensions: { operationId: `again-${unique()}` } }),
      });
      const text = await again.text();
      try {
        errors = JSON.parse(text).errors;
      } catch {
        throw new Error(`refused with HTTP ${again.status}, body not JSON: ${text.slice(0, 200)}`);
      }
      how = `HTTP ${res.status} (the client's NetworkError), body ${again.status}`;
    }
    const codes = (errors ?? []).map((e) => e.extensions?.code);
    if (!codes.length || codes.some((c) => c !== 'BAD_USER_INPUT')) {
      throw new Error(`expected errors coded BAD_USER_INPUT, got ${brief(errors)}`);
    }
    return `${how}: "${errors[0].message}"; requests ${traffic.join(', ')}`;
  });

  test(`${mode.name}: unsubscribe (subscribe's return) stops a live query on the server`, async (cleanup) => {
    await until(async () => (await metric(HTTP_URL, 'arena_live_queries')) === 0, 'no live query left running');
    const { client, traffic } = sseClient(cleanup, mode);
    // Two live queries on one client: stopping one must leave the other (and,
    // in single connection mode, the shared stream) running.
    const [a, b] = [freshMeal(), freshMeal()];
    const recA = new Recorder();
    const recB = new Recorder();
    const stopA = client.subscribe({ query: LIVE, variables: { id: a.id } }, recA.sink);
    cleanup(stopA);
    cleanup(client.subscribe({ query: LIVE, variables: { id: b.id } }, recB.sink));
    await recA.until((r) => r.results.length >= 1, 'the first result of A', STEP_MS);
    await recB.until((r) => r.results.length >= 1, 'the first result of B', STEP_MS);
    await until(async () => (await metric(HTTP_URL, 'arena_live_queries')) === 2, 'two live queries running');
    stopA();
    await until(async () => (await metric(HTTP_URL, 'arena_live_queries')) === 1, 'the server to stop A');
    // B goes on.
    const price = newPrice();
    await other.updateMeal(b.id, { price });
    await recB.until((r) => r.results.some((x) => x.data?.meal?.price === price), 'B to see its change', STEP_MS);
    if (recA.error !== undefined) throw new Error(`A ended with error ${brief(recA.error)}`);
    return `live queries 2 → 1 after unsubscribe, the other still updates; requests ${traffic.join(', ')}`;
  });

  test(`${mode.name}: return() on iterate()'s iterator stops a live query on the server`, async (cleanup) => {
    await until(async () => (await metric(HTTP_URL, 'arena_live_queries')) === 0, 'no live query left running');
    const { client, traffic } = sseClient(cleanup, mode);
    const meal = freshMeal();
    const it = client.iterate({ query: LIVE, variables: { id: meal.id } });
    cleanup(() => it.return());
    const first = await withTimeout(it.next(), STEP_MS, 'the first result');
    if (first.done || first.value?.data?.meal?.name !== meal.name) {
      throw new Error(`first iteration ${brief(first)}`);
    }
    await until(async () => (await metric(HTTP_URL, 'arena_live_queries')) === 1, 'the live query to run');
    await it.return();
    await until(async () => (await metric(HTTP_URL, 'arena_live_queries')) === 0, 'the server to stop it');
    const after = await withTimeout(it.next(), STEP_MS, 'the iterator to be done');
    if (!after.done) throw new Error(`the iterator yielded ${brief(after)} after return()`);
    return `live queries 1 → 0 after return(); requests ${traffic.join(', ')}`;
  });
}

test('graphql-ws client: a @live query over the WebSocket updates after updateMeal over HTTP; unsubscribe stops it', async (cleanup) => {
  await until(async () => (await metric(HTTP_URL, 'arena_live_queries')) === 0, 'no live query left running');
  const closes = [];
  const client = createWsClient({
    url: WS_URL,
    webSocketImpl: WebSocket,
    retryAttempts: 0,
    lazy: true,
    on: { closed: (e) => closes.push(`${e.code} ${e.reason}`) },
  });
  cleanup(() => client.dispose());
  const meal = freshMeal();
  const rec = new Recorder();
  const unsubscribe = client.subscribe({ query: LIVE, variables: { id: meal.id } }, rec.sink);
  cleanup(unsubscribe);
  const [first] = await rec.until(
    (r) => r.results.length >= 1 && r.results,
    `the first result (closes: ${closes.join(', ')})`,
    STEP_MS,
  );
  if (first.errors || first.data?.meal?.name !== meal.name) throw new Error(`first result ${brief(first)}`);
  await until(async () => (await metric(HTTP_URL, 'arena_live_queries')) === 1, 'the live query to run');
  const prices = [newPrice(), newPrice()];
  for (const price of prices) {
    await other.updateMeal(meal.id, { price });
    await rec.until(
      (r) => r.results.some((x) => x.data?.meal?.price === price),
      `a result with price ${price}`,
      STEP_MS,
    );
  }
  unsubscribe();
  await until(async () => (await metric(HTTP_URL, 'arena_live_queries')) === 0, 'the server to stop it');
  return `price ${first.data.meal.price} → ${prices.join(' → ')} in ${rec.results.length} results; stopped on unsubscribe`;
});

// ---------------------------------------------------------------------------
// Runner: sequential, one line per test, every resource released after each.

console.log(`GraphQL over SSE conformance against ${SSE_URL} (and ${WS_URL})`);
let passed = 0;
let failed = 0;
try {
  await withTimeout(setUp(), TEST_MS, 'set-up');
} catch (err) {
  console.log(`FAIL set-up (a user, meals) — ${err.message}`);
  console.log(`0 passed, ${tests.length} failed`);
  process.exit(1);
}
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
        await f();
      } catch {
        // already closed
      }
    }
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
