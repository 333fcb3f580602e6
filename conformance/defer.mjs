#!/usr/bin/env node
// Incremental delivery conformance: `@defer` and `@stream` on Arena's
// POST /graphql as clients meet them. `meros` splits the
// `multipart/mixed;deferSpec=20220824` answer (over node:http) and the parts,
// assembled (graphql-js 17.0.0-alpha.2 format), equal the same query without
// the directives; Apollo Client (HttpLink, Defer20220824Handler) ends on the
// non-deferred result; a client that accepts only JSON gets the whole result
// in one body; and over the WebSocket (graphql-ws) and SSE (graphql-sse) the
// same payloads arrive as `next` messages that assemble to the same result.
//
//   node defer.mjs [HTTP_URL]       (or ARENA_URL=http://127.0.0.1:8123/graphql)
//
// One line per test; exits 1 on any failure.

import http from 'node:http';
import { isDeepStrictEqual } from 'node:util';
import { meros } from 'meros';
import WebSocket from 'ws';
import { createClient as createWsClient } from 'graphql-ws';
import { createClient as createSseClient } from 'graphql-sse';
import { ApolloClient, HttpLink, InMemoryCache, gql } from '@apollo/client';
import { Defer20220824Handler } from '@apollo/client/incremental';
import {
  ArenaHttp,
  Recorder,
  assemble,
  brief,
  httpUrl,
  sseUrl,
  unique,
  withTimeout,
  wsUrl,
} from './lib/arena.mjs';

const HTTP_URL = httpUrl(process.argv[2]);
const WS_URL = wsUrl(HTTP_URL);
const SSE_URL = sseUrl(HTTP_URL);
const STEP_MS = 10_000; // bound on any single answer
const TEST_MS = 30_000; // bound on a whole test
const MULTIPART_ACCEPT = 'multipart/mixed;deferSpec=20220824,application/json';

// @defer on an inline fragment (totalCount) and on a named fragment spread
// inside the items of a list under @stream.
const DEFERRED = `query Deferred($cuisine: String!) {
  meals(first: 10, cuisine: $cuisine) {
    ... @defer(label: "count") { totalCount }
    nodes @stream(initialCount: 1) {
      id
      name
      ...Details @defer(label: "details")
    }
  }
}
fragment Details on Meal { cuisine price difficulty }`;

const PLAIN = `query Plain($cuisine: String!) {
  meals(first: 10, cuisine: $cuisine) {
    totalCount
    nodes { id name cuisine price difficulty }
  }
}`;

// ---------------------------------------------------------------------------
// Fixtures: four meals of a cuisine of their own.

const owner = new ArenaHttp(HTTP_URL);
const cuisine = `Defer${unique()}`;
const variables = { cuisine };
let plain; // the non-deferred result, as plain JSON

async function setUp() {
  await owner.signUp('defer');
  const prices = [9.5, 12, 7.25, 15];
  for (const [i, price] of prices.entries()) {
    await owner.createMeal(`Defer meal ${i} ${cuisine}`, cuisine, price, ['LOW', 'MED', 'HIGH', 'LOW'][i]);
  }
  const res = await owner.post(PLAIN, variables);
  if (res.status !== 200 || !res.body?.data || res.body.errors) {
    throw new Error(`the plain query answered ${res.status} ${res.text.slice(0, 200)}`);
  }
  plain = res.body;
  if (plain.data.meals.nodes.length < 3) throw new Error(`only ${plain.data.meals.nodes.length} meals`);
}

/** Checks the shape of a run of incremental payloads; returns a short summary. */
function checkPayloads(payloads) {
  if (payloads.length < 2) throw new Error(`expected several payloads, got ${brief(payloads)}`);
  const [initial] = payloads;
  if (initial.hasNext !== true) throw new Error(`initial payload without hasNext: true: ${brief(initial)}`);
  const nodes = initial.data?.meals?.nodes;
  if (!Array.isArray(nodes) || nodes.length !== 1) {
    throw new Error(`@stream(initialCount: 1): the initial payload has nodes ${brief(nodes)}`);
  }
  for (const [i, p] of payloads.entries()) {
    const last = i === payloads.length - 1;
    if (p.hasNext !== !last) throw new Error(`payload ${i} of ${payloads.length} has hasNext ${p.hasNext}`);
    if (i > 0 && !Array.isArray(p.incremental)) throw new Error(`payload ${i} has no incremental: ${brief(p)}`);
  }
  const inc = payloads.slice(1).flatMap((p) => p.incremental);
  const deferred = inc.filter((x) => 'data' in x).length;
  const streamed = inc.filter((x) => 'items' in x).reduce((n, x) => n + x.items.length, 0);
  return `${payloads.length} payloads: ${deferred} deferred fragment(s), ${streamed} streamed item(s)`;
}

function expectPlain(result, how) {
  if (!isDeepStrictEqual(result, plain)) {
    throw new Error(`${how} assembled to ${brief(result, 600)}, the plain query gave ${brief(plain, 600)}`);
  }
}

/** POSTs with node:http; resolves with the IncomingMessage (body unread). */
function postRaw(query, vars, accept) {
  const body = JSON.stringify({ query, variables: vars });
  return new Promise((resolve, reject) => {
    const req = http.request(
      HTTP_URL,
      {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
          accept,
        },
        timeout: STEP_MS,
      },
      resolve,
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${STEP_MS} ms`)));
    req.on('error', reject);
    req.end(body);
  });
}

// ---------------------------------------------------------------------------
// Tests: each returns a short detail for the report line, or throws.

const tests = [];
const test = (name, fn) => tests.push({ name, fn });

test('meros: multipart/mixed parts of @defer + @stream(initialCount: 1) assemble to the plain result', async () => {
  const res = await postRaw(DEFERRED, variables, MULTIPART_ACCEPT);
  const ct = res.headers['content-type'] ?? '';
  if (res.statusCode !== 200 || !/^multipart\/mixed\b/i.test(ct) || !/deferSpec=20220824/.test(ct)) {
    res.resume();
    throw new Error(`expected 200 multipart/mixed; deferSpec=20220824, got ${res.statusCode} "${ct}"`);
  }
  const parts = await meros(res);
  if (parts === res) throw new Error('meros did not see a multipart body');
  const payloads = [];
  for await (const part of parts) {
    if (!part.json) throw new Error(`part ${payloads.length} is not JSON: ${brief(part.headers)} ${String(part.body).slice(0, 200)}`);
    payloads.push(part.body);
  }
  const summary = checkPayloads(payloads);
  expectPlain(assemble(payloads), 'the parts');
  return `${ct}; ${summary}; assembled = plain`;
});

test('Apollo Client (HttpLink, Defer20220824Handler): a @defer + @stream query ends on the non-deferred result', async (cleanup) => {
  const answers = []; // content-type of each answer
  const fetchFn = async (input, init) => {
    const res = await fetch(input, { ...init, signal: AbortSignal.timeout(STEP_MS) });
    answers.push(res.headers.get('content-type'));
    return res;
  };
  const client = new ApolloClient({
    link: new HttpLink({ uri: HTTP_URL, fetch: fetchFn }),
    cache: new InMemoryCache(),
    incrementalHandler: new Defer20220824Handler(),
  });
  cleanup(() => client.stop());

  const emissions = [];
  const deferred = await withTimeout(
    new Promise((resolve, reject) => {
      const sub = client
        .watchQuery({ query: gql(DEFERRED), variables, fetchPolicy: 'no-cache' })
        .subscribe({
          next: (r) => {
            emissions.push(r);
            if (r.error) reject(r.error);
            else if (!r.loading && r.dataState === 'complete') resolve(r);
          },
          error: reject,
        });
      cleanup(() => sub.unsubscribe());
    }),
    STEP_MS,
    'the deferred query to complete',
  );
  const { data: nonDeferred, error } = await client.query({ query: gql(PLAIN), variables, fetchPolicy: 'no-cache' });
  if (error) throw new Error(`the plain query failed: ${brief(error)}`);
  if (!isDeepStrictEqual(deferred.data, nonDeferred)) {
    throw new Error(`deferred ${brief(deferred.data, 600)} ≠ plain ${brief(nonDeferred, 600)}`);
  }
  // Apollo adds __typename; without it, the plain JSON answer.
  const strip = (v) => JSON.parse(JSON.stringify(v, (k, x) => (k === '__typename' ? undefined : x)));
  if (!isDeepStrictEqual(strip(deferred.data), plain.data)) {
    throw new Error(`deferred ${brief(deferred.data, 600)} ≠ the plain JSON answer`);
  }
  if (!/^multipart\/mixed/i.test(answers[0] ?? '')) throw new Error(`the deferred query was answered with ${answers[0]}`);
  const states = emissions.map((e) => e.dataState).join(' → ');
  return `answered ${answers[0]}; states ${states}; final data = non-deferred (${nonDeferred.meals.nodes.length} meals)`;
});

test('a client that accepts only JSON gets the whole result of a @defer + @stream query in one body', async () => {
  const out = [];
  for (const accept of ['application/json', 'application/graphql-response+json']) {
    const res = await owner.post(DEFERRED, variables, { accept, token: null });
    if (res.status !== 200 || !res.contentType.startsWith(accept)) {
      throw new Error(`Accept: ${accept} → ${res.status} "${res.contentType}" ${res.text.slice(0, 200)}`);
    }
    if (res.body === undefined) throw new Error(`Accept: ${accept} → a body that is not JSON: ${res.text.slice(0, 200)}`);
    if ('hasNext' in res.body || 'incremental' in res.body) {
      throw new Error(`Accept: ${accept} → an incremental payload: ${brief(res.body)}`);
    }
    expectPlain(res.body, `Accept: ${accept}`);
    out.push(`${accept} → ${res.contentType}`);
  }
  return `${out.join('; ')}; whole result = plain`;
});

test('graphql-ws client: the payloads arrive as next messages and assemble to the plain result', async (cleanup) => {
  const client = createWsClient({ url: WS_URL, webSocketImpl: WebSocket, retryAttempts: 0, lazy: true });
  cleanup(() => client.dispose());
  const rec = new Recorder();
  client.subscribe({ query: DEFERRED, variables }, rec.sink);
  const payloads = await rec.done('the deferred query', STEP_MS);
  const summary = checkPayloads(payloads);
  expectPlain(assemble(payloads), 'the next messages');
  return `${summary}; assembled = plain`;
});

for (const singleConnection of [false, true]) {
  const mode = singleConnection ? 'single connection' : 'distinct connections';
  test(`graphql-sse client (${mode}): the payloads arrive as next events and assemble to the plain result`, async (cleanup) => {
    const client = createSseClient({ url: SSE_URL, singleConnection, retryAttempts: 0 });
    cleanup(() => client.dispose());
    const rec = new Recorder();
    client.subscribe({ query: DEFERRED, variables }, rec.sink);
    const payloads = await rec.done('the deferred query', STEP_MS);
    const summary = checkPayloads(payloads);
    expectPlain(assemble(payloads), 'the next events');
    return `${summary}; assembled = plain`;
  });
}

// ---------------------------------------------------------------------------
// Runner: sequential, one line per test, every resource released after each.

console.log(`@defer / @stream conformance against ${HTTP_URL} (and ${WS_URL}, ${SSE_URL})`);
let passed = 0;
let failed = 0;
try {
  await withTimeout(setUp(), TEST_MS, 'set-up');
} catch (err) {
  console.log(`FAIL set-up (a user, meals, the plain result) — ${err.message}`);
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
