// Shared helpers for the conformance scripts: where Arena is, a plain HTTP
// client that signs up, logs in, keeps meals, fills a battle ring and fights,
// a recorder for what a subscription delivers, and the incremental-delivery
// assembly (@defer / @stream payloads into one result).

import { randomBytes } from 'node:crypto';

/** The GraphQL HTTP endpoint, e.g. http://127.0.0.1:8123/graphql. */
export function httpUrl(arg) {
  return arg || process.env.ARENA_URL || 'http://127.0.0.1:8000/graphql';
}

/** The WebSocket endpoint: ARENA_WS_URL, else <http url>/ws with a ws(s) scheme. */
export function wsUrl(http) {
  if (process.env.ARENA_WS_URL) return process.env.ARENA_WS_URL;
  const u = new URL(http);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  u.pathname = `${u.pathname.replace(/\/$/, '')}/ws`;
  return u.toString();
}

/** The GraphQL over SSE endpoint: ARENA_SSE_URL, else <http url>/stream. */
export function sseUrl(http) {
  if (process.env.ARENA_SSE_URL) return process.env.ARENA_SSE_URL;
  const u = new URL(http);
  u.pathname = `${u.pathname.replace(/\/$/, '')}/stream`;
  return u.toString();
}

/** The origin (scheme://host:port) of a URL. */
export function originOf(url) {
  return new URL(url).origin;
}

/** A short unique suffix so repeated runs against one database do not collide. */
export function unique() {
  return `${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
}

/** Rejects after `ms` with `what` in the message; clears itself when `promise` settles. */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Polls `cond` (sync or async) every 50 ms until it holds; throws after `ms`. */
export async function until(cond, what, ms = 5000) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The value of one unlabelled series of Arena's /metrics (0 when absent). */
export async function metric(http, name) {
  const res = await fetch(new URL('/metrics', http), { signal: AbortSignal.timeout(5000) });
  const line = (await res.text()).split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : 0;
}

/** A short, one-line rendering of anything for a report line. */
export function brief(value, max = 300) {
  let s;
  if (value instanceof Error) {
    s = `${value.name}: ${value.message}`;
  } else {
    try {
      s = JSON.stringify(value);
    } catch {
      s = String(value);
    }
  }
  s = String(s).replace(/\s+/g, ' ');
  return s.length > max ? `${s.slice(0, max)}…` : s;
}

/**
 * Records what a subscription delivers (a sink for graphql-ws and graphql-sse
 * clients) and lets a test wait for a condition on it.
 */
export class Recorder {
  constructor() {
    this.results = [];
    this.error = undefined;
    this.completed = false;
    this.listeners = new Set();
    this.sink = {
      next: (r) => this.poke(() => this.results.push(r)),
      error: (e) => this.poke(() => (this.error = e ?? new Error('error without a value'))),
      complete: () => this.poke(() => (this.completed = true)),
    };
  }

  poke(change) {
    change();
    for (const l of [...this.listeners]) l();
  }

  get ended() {
    return this.error !== undefined || this.completed;
  }

  /**
   * Resolves with `pred(this)`'s first truthy value; rejects when the
   * subscription ends without it, or after `ms`.
   */
  until(pred, what, ms = 5000) {
    let check;
    return withTimeout(
      new Promise((resolve, reject) => {
        check = () => {
          const hit = pred(this);
          if (hit) return done(() => resolve(hit));
          if (this.ended) {
            const how = this.error !== undefined ? `error ${brief(this.error)}` : 'complete';
            return done(() =>
              reject(new Error(`ended (${how}) while waiting for ${what}; results ${brief(this.results)}`)),
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
      `${what} (results so far ${brief(this.results)})`,
    ).finally(() => this.listeners.delete(check));
  }

  /** Resolves when the subscription completes; rejects on its error or after `ms`. */
  async done(what, ms = 5000) {
    await this.until((r) => r.ended, `${what} to end`, ms);
    if (this.error !== undefined) throw new Error(`${what} ended with error ${brief(this.error)}`);
    return this.results;
  }
}

/**
 * Assembles incremental-delivery payloads (graphql-js 17.0.0-alpha.2 format:
 * `{data, hasNext}` then `{incremental: [{data, path} | {items, path}], hasNext}`)
 * into one result: each `data` deep-merged at its `path`, each `items` put in
 * the list at `path` (whose last element is the first item's index).
 * Throws on a payload that does not fit.
 */
export function assemble(payloads) {
  if (!payloads.length) throw new Error('no payload');
  const [initial, ...rest] = payloads;
  const result = { data: structuredClone(initial.data ?? null) };
  const errors = [...(initial.errors ?? [])];
  const at = (path, what) => {
    let node = result.data;
    for (const key of path) {
      if (node === null || typeof node !== 'object' || !(key in node)) {
        throw new Error(`${what} at ${JSON.stringify(path)}: nothing at ${JSON.stringify(key)}`);
      }
      node = node[key];
    }
    return node;
  };
  for (const [n, payload] of rest.entries()) {
    if (payload.data !== undefined) throw new Error(`subsequent payload ${n + 1} has a top-level data`);
    errors.push(...(payload.errors ?? []));
    for (const inc of payload.incremental ?? []) {
      errors.push(...(inc.errors ?? []));
      if (!Array.isArray(inc.path)) throw new Error(`incremental without a path: ${brief(inc)}`);
      if ('items' in inc) {
        const list = at(inc.path.slice(0, -1), 'items');
        const start = inc.path.at(-1);
        if (!Array.isArray(list) || typeof start !== 'number') {
          throw new Error(`items at ${JSON.stringify(inc.path)}: not an index into a list`);
        }
        if (start !== list.length) {
          throw new Error(`items at ${JSON.stringify(inc.path)} but the list has ${list.length} items`);
        }
        for (const [i, item] of (inc.items ?? []).entries()) {
          list[start + i] = structuredClone(item);
        }
      } else if ('data' in inc) {
        if (inc.data !== null) deepMerge(at(inc.path, 'data'), inc.data);
      } else {
        throw new Error(`incremental with neither data nor items: ${brief(inc)}`);
      }
    }
  }
  if (errors.length) result.errors = errors;
  return result;
}

function deepMerge(target, source) {
  for (const [k, v] of Object.entries(source)) {
    if (v && typeof v === 'object' && target[k] && typeof target[k] === 'object') {
      deepMerge(target[k], v);
    } else {
      target[k] = structuredClone(v);
    }
  }
}

export class ArenaHttp {
  constructor(url) {
    this.url = url;
    this.token = null;
  }

  /** POSTs one operation; throws on a non-2xx status or a GraphQL error. */
  async gql(query, variables = {}) {
    const headers = {
      'content-type': 'application/json',
      accept: 'application/graphql-response+json, application/json',
    };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    const res = await fetch(this.url, {
      method: 'POST',
      headers,
      body: JSON.stringify({ query, variables }),
      signal: AbortSignal.timeout(15_000),
    });
    const text = await res.text();
    let body;
    try {
      body = JSON.parse(text);
    } catch {
      throw new Error(`HTTP ${res.status}: not JSON: ${text.slice(0, 200)}`);
    }
    if (body.errors?.length) {
      throw new Error(`HTTP ${res.status}: ${JSON.stringify(body.errors).slice(0, 300)}`);
    }
    if (!res.ok) throw new Error(`HTTP ${res.status}: ${text.slice(0, 200)}`);
    return body.data;
  }

  /**
   * POSTs one operation and returns the answer as it came:
   * `{ status, contentType, text, body }` (`body` parsed when it is JSON).
   */
  async post(query, variables = {}, { accept = 'application/json', token = this.token } = {}) {
    const headers = { 'content-type': 'application/json', accept };
    if (token) headers.authorization = `Bearer ${token}`;
    const res = await fetch(this.url, {
      method: 'POST',
      headers,
      body: JSON.stringify({ query, variables }),
      signal: AbortSignal.timeout(15_000),
    });
    const text = await res.text();
    let body;
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined;
    }
    return { status: res.status, contentType: res.headers.get('content-type') ?? '', text, body };
  }

  /** createUser → login; keeps the bearer token for later calls. */
  async signUp(prefix = 'conf') {
    const username = `${prefix}_${unique()}`;
    const password = 'correct horse battery';
    await this.gql(
      'mutation($u: String!, $p: String!) { createUser(username: $u, password: $p) { id } }',
      { u: username, p: password },
    );
    const { login } = await this.gql(
      'mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token expiresAt } }',
      { u: username, p: password },
    );
    this.token = login.token;
    return { username, password, token: login.token };
  }

  async createMeal(name, cuisine, price, difficulty) {
    const { createMeal } = await this.gql(
      'mutation($input: CreateMealInput!) { createMeal(input: $input) { id name } }',
      { input: { name, cuisine, price, difficulty } },
    );
    return createMeal;
  }

  async updateMeal(id, input) {
    const { updateMeal } = await this.gql(
      'mutation($id: ID!, $input: UpdateMealInput!) { updateMeal(id: $id, input: $input) { id name price } }',
      { id, input },
    );
    return updateMeal;
  }

  async prep(mealId) {
    const { prepCombatant } = await this.gql(
      'mutation($id: ID!) { prepCombatant(mealId: $id) { id name } }',
      { id: mealId },
    );
    return prepCombatant;
  }

  async battle() {
    const { battle } = await this.gql(
      'mutation { battle { id winner { id name } loser { id name } } }',
    );
    return battle;
  }

  /**
   * Signs up, creates two meals and puts both in the ring. Returns a function
   * that fights one battle and puts the loser back in the ring, so it can be
   * called again.
   */
  async readyRing(prefix = 'conf') {
    if (!this.token) await this.signUp(prefix);
    const tag = unique();
    const a = await this.createMeal(`Pad Thai ${tag}`, 'Thai', 11, 'MED');
    const b = await this.createMeal(`Ramen ${tag}`, 'Japanese', 13.5, 'HIGH');
    await this.prep(a.id);
    await this.prep(b.id);
    return async () => {
      const battle = await this.battle();
      await this.prep(battle.loser.id);
      return battle;
    };
  }
}

/**
 * Subscribers have no acknowledgement in either WebSocket protocol, so a battle
 * fought right after `subscribe` may race the server's registration of it.
 * Fights up to `attempts` battles, each followed by a bounded wait for the
 * subscriber to report that very battle id (`seen(id, ms)` resolves true/false).
 */
export async function battleUntilSeen(fight, seen, { attempts = 3, waitMs = 4000 } = {}) {
  const fought = [];
  for (let i = 1; i <= attempts; i++) {
    const battle = await fight();
    fought.push(battle.id);
    if (await seen(battle.id, waitMs)) return { battle, attempts: i };
  }
  throw new Error(
    `no battleResults event for battles ${fought.join(', ')} (each waited ${waitMs} ms)`,
  );
}
