// Load: 200 concurrent streaming clients, several requests each — no lost or
// duplicated token, greedy outputs identical to single-request runs, KV usage
// back to zero; then 1000 clients hanging up mid-stream — every KV block back
// in the pool. Model calls are short (max_tokens 8) so this stays quick on a CPU.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

import { startServer, waitKvFree, metrics, SCALE } from './server_util.mjs';

const CLIENTS = Math.max(4, Math.round(200 * SCALE));
const REQUESTS_PER_CLIENT = 3;
const DISCONNECTS = Math.max(8, Math.round(1000 * SCALE));
const MAX_TOKENS = 8;
const PROMPTS = [
  'In the beginning', 'And the LORD said unto Moses', 'Blessed are the', 'The LORD is my shepherd',
  'And it came to pass', 'Thus saith the LORD', 'For God so loved', 'Let there be light',
  'And Jesus answered', 'Hear, O Israel',
];

let server;
let client;

before(async () => {
  server = await startServer(['--max-connections', String(DISCONNECTS + 200)]);
  client = new OpenAI({ baseURL: server.baseURL, apiKey: 'unused', maxRetries: 0, timeout: 600000 });
});

after(async () => {
  assert.equal(await server.stop(), 0, server.stderr());
});

test(`${CLIENTS} concurrent streaming clients × ${REQUESTS_PER_CLIENT}: exact tokens, greedy = single runs, KV back to 0`, async () => {
  // References: one request at a time (nothing else in the batch).
  const ref = [];
  for (const p of PROMPTS) {
    const r = await client.completions.create({ model: 'kjv', prompt: p, max_tokens: MAX_TOKENS, temperature: 0, logprobs: 0 });
    ref.push({ text: r.choices[0].text, tokens: r.choices[0].logprobs.tokens, n: r.usage.completion_tokens });
  }
  const failures = [];
  const one = async (c, k) => {
    const i = (c * REQUESTS_PER_CLIENT + k) % PROMPTS.length;
    const stream = await client.completions.create({
      model: 'kjv', prompt: PROMPTS[i], max_tokens: MAX_TOKENS, temperature: 0, logprobs: 0, stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    const tokens = [];
    let usage = null;
    let done = 0;
    for await (const ch of stream) {
      if (ch.usage) usage = ch.usage;
      if (!ch.choices.length) continue;
      text += ch.choices[0].text;
      if (ch.choices[0].logprobs) tokens.push(...ch.choices[0].logprobs.tokens);
      if (ch.choices[0].finish_reason) done++;
    }
    const want = ref[i];
    if (text !== want.text || JSON.stringify(tokens) !== JSON.stringify(want.tokens) || usage?.completion_tokens !== want.n || done !== 1)
      failures.push({ client: c, request: k, prompt: PROMPTS[i], text, want: want.text, tokens: tokens.length, usage, done });
  };
  await Promise.all(Array.from({ length: CLIENTS }, async (_, c) => {
    for (let k = 0; k < REQUESTS_PER_CLIENT; k++) await one(c, k);
  }));
  assert.deepEqual(failures.slice(0, 5), [], `${failures.length} mismatching streams`);
  const m = await waitKvFree(server);
  assert.equal(m['shardlm:kv_cache_usage_perc'], 0);
  assert.equal(m['shardlm:gpu_cache_usage_perc'], 0);
  assert.equal(m['shardlm:kv_blocks_free'], m['shardlm:kv_blocks_total']);
  assert.equal(m['shardlm:num_requests_running'], 0);
  assert.ok(m['shardlm:request_success_total{model_name="kjv",finished_reason="length"}'] >= CLIENTS * REQUESTS_PER_CLIENT);
});

test(`${DISCONNECTS} clients disconnecting mid-stream: every KV block back in the pool`, async () => {
  const before = await metrics(server);
  // Client i hangs up after i % 3 events: 0 = right after the headers (the
  // request is usually still queued), 1 = after the first chunk, 2 = after two.
  let hungUp = 0;
  await Promise.all(Array.from({ length: DISCONNECTS }, async (_, i) => {
    const ctl = new AbortController();
    try {
      const r = await fetch(`${server.baseURL}/completions`, {
        method: 'POST', signal: ctl.signal, headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ model: 'kjv', prompt: PROMPTS[i % PROMPTS.length], max_tokens: 400, ignore_eos: true, temperature: 0, stream: true }),
      });
      assert.equal(r.status, 200);
      const want = i % 3;
      let seen = 0;
      if (want === 0) { ctl.abort(); hungUp++; return; }
      for await (const chunk of r.body) {
        seen += (new TextDecoder().decode(chunk).match(/^data: /gm) || []).length;
        if (seen >= want) { ctl.abort(); hungUp++; return; }
      }
    } catch (e) {
      if (e.name !== 'AbortError') throw e;
    }
  }));
  assert.equal(hungUp, DISCONNECTS);
  const m = await waitKvFree(server, 120000);
  assert.equal(m['shardlm:num_requests_running'], 0, 'requests still running after their clients left');
  assert.equal(m['shardlm:num_requests_waiting'], 0);
  assert.equal(m['shardlm:kv_cache_usage_perc'], 0);
  assert.equal(m['shardlm:kv_blocks_free'], m['shardlm:kv_blocks_total']);
  // Each handler records its request after the final update; poll until all have.
  const abortKey = 'shardlm:request_success_total{model_name="kjv",finished_reason="abort"}';
  let aborted = 0;
  for (const end = Date.now() + 30000; Date.now() < end;) {
    aborted = (await metrics(server))[abortKey] - before[abortKey];
    if (aborted >= DISCONNECTS) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(aborted, DISCONNECTS, 'every hung-up request ended as aborted');
  // and the server still answers
  const r = await client.completions.create({ model: 'kjv', prompt: 'And', max_tokens: 2, temperature: 0 });
  assert.equal(r.usage.completion_tokens, 2);
});
