#!/usr/bin/env node
// GraphQL-over-HTTP conformance: runs every `serverAudits` check of the
// `graphql-http` npm package against Arena's POST /graphql.
//
//   node audit.mjs [URL]            (or ARENA_URL=http://127.0.0.1:8123/graphql)
//
// Prints one line per audit (level, pass/fail, id, name), the server's answer
// for each failing one, a summary, and exits 1 if any MUST or SHOULD fails.
// MAY audits are reported but never fail the run.

import { serverAudits } from 'graphql-http';

const url = process.argv[2] || process.env.ARENA_URL || 'http://127.0.0.1:8000/graphql';
const TIMEOUT_MS = Number(process.env.AUDIT_TIMEOUT_MS || 10_000);

// Every request gets a bounded timeout, so a hanging server fails the audit
// instead of hanging the run.
const fetchFn = (input, init = {}) =>
  fetch(input, { ...init, signal: AbortSignal.timeout(TIMEOUT_MS) });

function levelOf(name) {
  const m = /^(MUST|SHOULD|MAY)\b/.exec(name);
  return m ? m[1] : 'MUST';
}

function oneLine(s, max = 400) {
  s = String(s).replace(/\s+/g, ' ').trim();
  return s.length > max ? `${s.slice(0, max)}…` : s;
}

async function describeResponse(res) {
  if (!res) return 'no response';
  const ct = res.headers.get('content-type');
  let body = '';
  try {
    body = await res.text();
  } catch {
    body = '<body already read>';
  }
  if (ct && ct.includes('text/html')) body = `<html, ${body.length} bytes>`;
  return `HTTP ${res.status} content-type=${ct ?? '<none>'} body=${oneLine(body, 300) || '<empty>'}`;
}

const audits = serverAudits({ url, fetchFn });
console.log(`graphql-http ${audits.length} server audits against ${url}`);

const counts = {
  MUST: { pass: 0, fail: 0 },
  SHOULD: { pass: 0, fail: 0 },
  MAY: { pass: 0, fail: 0 },
};
const failures = [];

// Sequential: the output order is the audit order, run after run.
for (const audit of audits) {
  const level = levelOf(audit.name);
  let result;
  try {
    result = await audit.fn();
  } catch (err) {
    // The package throws only on fatal errors (e.g. connection refused).
    result = { status: 'error', reason: `threw: ${err?.cause?.message || err?.message || err}` };
  }
  const pass = result.status === 'ok';
  counts[level][pass ? 'pass' : 'fail']++;
  console.log(`${pass ? 'PASS' : 'FAIL'} ${level.padEnd(6)} ${audit.id} ${audit.name}`);
  if (!pass) {
    const answer = await describeResponse(result.response);
    console.log(`       reason: ${oneLine(result.reason)}`);
    console.log(`       server: ${answer}`);
    failures.push({ level, id: audit.id, name: audit.name });
  }
}

const total = audits.length;
const passed = counts.MUST.pass + counts.SHOULD.pass + counts.MAY.pass;
console.log('');
console.log(
  `summary: ${passed}/${total} audits pass; ` +
    ['MUST', 'SHOULD', 'MAY']
      .map((l) => `${l} ${counts[l].pass} pass / ${counts[l].fail} fail`)
      .join(', '),
);
const blocking = counts.MUST.fail + counts.SHOULD.fail;
if (blocking > 0) {
  console.log(`FAILED: ${counts.MUST.fail} MUST and ${counts.SHOULD.fail} SHOULD audits fail`);
} else {
  console.log('OK: every MUST and SHOULD audit passes');
}
// The plain closing line CI reads: MUST+SHOULD as the checks that count.
console.log(`${counts.MUST.pass + counts.SHOULD.pass} passed, ${blocking} failed`);
process.exit(blocking > 0 ? 1 : 0);
