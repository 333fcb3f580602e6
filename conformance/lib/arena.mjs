// Shared helpers for the conformance scripts: where Arena is, and a plain
// HTTP client that signs up, logs in, fills a battle ring and fights.

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
