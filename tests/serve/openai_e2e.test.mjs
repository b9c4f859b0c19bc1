// End to end with the official `openai` npm client against a real
// `shardlm serve` on the default model (models/kjv): chat and completions,
// streaming and not, usage, logprobs, stop strings, every error case, and the
// server still serving after each.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

import { startServer, postRaw, assertOpenAiError, waitKvFree, metrics } from './server_util.mjs';

let server;
let client;
const PROMPT = 'In the beginning God created';

before(async () => {
  server = await startServer();
  // maxRetries 0: the client retries 408/5xx by default, which would hide them.
  client = new OpenAI({ baseURL: server.baseURL, apiKey: 'unused', maxRetries: 0 });
});

after(async () => {
  const code = await server.stop();
  assert.equal(code, 0, `serve exited ${code}; stderr:\n${server.stderr()}`);
});

async function stillServing() {
  const r = await client.completions.create({ model: 'kjv', prompt: 'And', max_tokens: 2, temperature: 0 });
  assert.equal(r.usage.completion_tokens, 2);
}

test('models list names the served model', async () => {
  const list = await client.models.list();
  const ids = list.data.map((m) => m.id);
  assert.deepEqual(ids, ['kjv']);
  const one = await client.models.retrieve('kjv');
  assert.equal(one.id, 'kjv');
});

test('completion: text, usage, finish_reason length', async () => {
  const r = await client.completions.create({ model: 'kjv', prompt: PROMPT, max_tokens: 12, temperature: 0 });
  assert.equal(r.object, 'text_completion');
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.ok(r.choices[0].text.length > 0);
  assert.equal(r.usage.completion_tokens, 12);
  assert.ok(r.usage.prompt_tokens > 0);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + 12);
  // max_completion_tokens is accepted too
  const r2 = await client.completions.create({ model: 'kjv', prompt: PROMPT, max_completion_tokens: 3, temperature: 0 });
  assert.equal(r2.usage.completion_tokens, 3);
});

test('completion streaming equals the non-streamed greedy text, with usage', async () => {
  const full = await client.completions.create({ model: 'kjv', prompt: PROMPT, max_tokens: 16, temperature: 0 });
  const stream = await client.completions.create({
    model: 'kjv', prompt: PROMPT, max_tokens: 16, temperature: 0, stream: true, stream_options: { include_usage: true },
  });
  let text = '';
  let finish = null;
  let usage = null;
  let chunks = 0;
  for await (const c of stream) {
    chunks++;
    if (c.usage) usage = c.usage;
    if (c.choices.length) {
      text += c.choices[0].text;
      if (c.choices[0].finish_reason) finish = c.choices[0].finish_reason;
    }
  }
  assert.ok(chunks > 2);
  assert.equal(text, full.choices[0].text);
  assert.equal(finish, 'length');
  assert.deepEqual(usage, full.usage);
});

test('chat: non-streaming and streaming agree; role first; usage', async () => {
  const messages = [{ role: 'user', content: 'Who made the heaven and the earth?' }];
  const full = await client.chat.completions.create({ model: 'kjv', messages, max_tokens: 10, temperature: 0 });
  assert.equal(full.object, 'chat.completion');
  assert.equal(full.choices[0].message.role, 'assistant');
  assert.equal(typeof full.choices[0].message.content, 'string');
  assert.equal(full.usage.completion_tokens <= 10, true);
  const stream = await client.chat.completions.create({
    model: 'kjv', messages, max_tokens: 10, temperature: 0, stream: true, stream_options: { include_usage: true },
  });
  let text = '';
  let first = true;
  let usage = null;
  let finish = null;
  for await (const c of stream) {
    assert.equal(c.object, 'chat.completion.chunk');
    if (first) { assert.equal(c.choices[0].delta.role, 'assistant'); first = false; }
    if (c.usage) usage = c.usage;
    if (c.choices.length) {
      text += c.choices[0].delta.content ?? '';
      if (c.choices[0].finish_reason) finish = c.choices[0].finish_reason;
    }
  }
  assert.equal(text, full.choices[0].message.content);
  assert.equal(finish, full.choices[0].finish_reason);
  assert.deepEqual(usage, full.usage);
  // content as an array of text parts is accepted
  const parts = await client.chat.completions.create({
    model: 'kjv', max_tokens: 10, temperature: 0,
    messages: [{ role: 'user', content: [{ type: 'text', text: 'Who made the heaven ' }, { type: 'text', text: 'and the earth?' }] }],
  });
  assert.equal(parts.choices[0].message.content, full.choices[0].message.content);
});

test('completion logprobs: OpenAI shape, tokens join to the text', async () => {
  const r = await client.completions.create({ model: 'kjv', prompt: PROMPT, max_tokens: 6, temperature: 0, logprobs: 3 });
  const lp = r.choices[0].logprobs;
  assert.equal(lp.tokens.length, 6);
  assert.equal(lp.token_logprobs.length, 6);
  assert.equal(lp.top_logprobs.length, 6);
  assert.equal(lp.text_offset.length, 6);
  assert.equal(lp.tokens.join(''), r.choices[0].text);
  for (let i = 0; i < 6; i++) {
    assert.ok(lp.token_logprobs[i] <= 0);
    const top = lp.top_logprobs[i];
    assert.ok(Object.keys(top).length >= 3);
    // greedy: the chosen token is the most likely one
    const best = Math.max(...Object.values(top));
    assert.ok(Math.abs(best - lp.token_logprobs[i]) < 1e-5);
  }
  assert.equal(lp.text_offset[0], 0);
  // streamed logprobs carry the same tokens
  const stream = await client.completions.create({ model: 'kjv', prompt: PROMPT, max_tokens: 6, temperature: 0, logprobs: 0, stream: true });
  const tokens = [];
  for await (const c of stream) if (c.choices[0]?.logprobs) tokens.push(...c.choices[0].logprobs.tokens);
  assert.deepEqual(tokens, lp.tokens);
});

test('chat logprobs + top_logprobs: OpenAI shape', async () => {
  const r = await client.chat.completions.create({
    model: 'kjv', messages: [{ role: 'user', content: 'Say amen' }], max_tokens: 5, temperature: 0, logprobs: true, top_logprobs: 2,
  });
  const content = r.choices[0].logprobs.content;
  assert.equal(content.length, r.usage.completion_tokens);
  for (const e of content) {
    assert.equal(typeof e.token, 'string');
    assert.ok(e.logprob <= 0);
    assert.deepEqual(e.bytes, [...Buffer.from(e.token, 'utf8')]);
    assert.equal(e.top_logprobs.length, 2);
    assert.ok(e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob);
  }
  const plain = await client.chat.completions.create({ model: 'kjv', messages: [{ role: 'user', content: 'Say amen' }], max_tokens: 5, temperature: 0 });
  assert.equal(plain.choices[0].logprobs, null);
});

test('stop strings: output ends before the stop string, finish_reason stop, also streamed', async () => {
  const full = await client.completions.create({ model: 'kjv', prompt: PROMPT, max_tokens: 30, temperature: 0 });
  const text = full.choices[0].text;
  // A stop string from the middle of the greedy output (a word boundary after a few tokens).
  const at = text.indexOf(' ', Math.floor(text.length / 2));
  assert.ok(at > 0, `no space in ${JSON.stringify(text)}`);
  const stop = text.slice(at, at + 4);
  const expected = text.slice(0, text.indexOf(stop));
  for (const stopParam of [stop, ['never-appears-xyz', stop]]) {
    const r = await client.completions.create({ model: 'kjv', prompt: PROMPT, max_tokens: 30, temperature: 0, stop: stopParam });
    assert.equal(r.choices[0].text, expected);
    assert.equal(r.choices[0].finish_reason, 'stop');
    const stream = await client.completions.create({ model: 'kjv', prompt: PROMPT, max_tokens: 30, temperature: 0, stop: stopParam, stream: true });
    let s = '';
    let finish = null;
    for await (const c of stream) { s += c.choices[0]?.text ?? ''; finish = c.choices[0]?.finish_reason ?? finish; }
    assert.equal(s, expected);
    assert.equal(finish, 'stop');
  }
});

test('sampling: seed reproduces, top_k / top_p / min_p / penalties accepted', async () => {
  const args = { model: 'kjv', prompt: PROMPT, max_tokens: 12, temperature: 1.0, seed: 1234, top_k: 50, top_p: 0.9, min_p: 0.01,
                 presence_penalty: 0.5, frequency_penalty: 0.5, repetition_penalty: 1.1 };
  const a = await client.completions.create(args);
  const b = await client.completions.create(args);
  assert.equal(a.choices[0].text, b.choices[0].text);
});

test('errors: malformed JSON, wrong types, invalid values → 400 in the OpenAI shape', async () => {
  const bad = await postRaw(server, '/v1/completions', '{"prompt": "x", ');
  assert.equal(bad.status, 400);
  assertOpenAiError(bad.json, 400, { type: 'invalid_request_error' });
  const notObject = await postRaw(server, '/v1/chat/completions', '[1,2]');
  assert.equal(notObject.status, 400);

  const cases = [
    [{ prompt: 'x', temperature: 'hot' }, 'temperature'],
    [{ prompt: 'x', temperature: -0.5 }, 'temperature'],
    [{ prompt: 'x', top_p: 0 }, 'top_p'],
    [{ prompt: 'x', top_p: 1.5 }, 'top_p'],
    [{ prompt: 'x', max_tokens: 0 }, 'max_tokens'],
    [{ prompt: 'x', max_tokens: 2.5 }, 'max_tokens'],
    [{ prompt: 'x', max_tokens: 'ten' }, 'max_tokens'],
    [{ prompt: 'x', n: 2 }, 'n'],
    [{ prompt: 'x', top_k: -5 }, 'top_k'],
    [{ prompt: 'x', min_p: 2 }, 'min_p'],
    [{ prompt: 'x', presence_penalty: 3 }, 'presence_penalty'],
    [{ prompt: 'x', repetition_penalty: 0 }, 'repetition_penalty'],
    [{ prompt: 'x', stop: 5 }, 'stop'],
    [{ prompt: 'x', logprobs: 50 }, 'logprobs'],
    [{ prompt: 'x', stream: 'yes' }, 'stream'],
    [{ prompt: 'x', stream_options: { include_usage: true } }, 'stream_options'],
    [{ prompt: 'x', seed: 'abc' }, 'seed'],
    [{ prompt: 7 }, 'prompt'],
    [{}, 'prompt'],
  ];
  for (const [body, param] of cases) {
    const r = await postRaw(server, '/v1/completions', { model: 'kjv', ...body });
    assert.equal(r.status, 400, `${JSON.stringify(body)} → ${r.status} ${r.text}`);
    assertOpenAiError(r.json, 400, { type: 'invalid_request_error', param });
  }
  const chatCases = [
    [{ messages: 'hi' }, 'messages'],
    [{ messages: [] }, 'messages'],
    [{ messages: [{ content: 'no role' }] }, 'messages'],
    [{ messages: [{ role: 'user', content: 'x' }], logprobs: 3 }, 'logprobs'],
    [{ messages: [{ role: 'user', content: 'x' }], top_logprobs: 2 }, 'top_logprobs'],
    [{ messages: [{ role: 'user', content: 'x' }], n: 3 }, 'n'],
  ];
  for (const [body, param] of chatCases) {
    const r = await postRaw(server, '/v1/chat/completions', { model: 'kjv', ...body });
    assert.equal(r.status, 400, `${JSON.stringify(body)} → ${r.status} ${r.text}`);
    assertOpenAiError(r.json, 400, { type: 'invalid_request_error', param });
  }
  // Through the official client: BadRequestError with the server's message.
  await assert.rejects(client.completions.create({ model: 'kjv', prompt: 'x', temperature: -1 }), (e) => {
    assert.equal(e.status, 400);
    assert.ok(e instanceof OpenAI.BadRequestError);
    assert.match(e.message, /temperature/);
    return true;
  });
  await stillServing();
});

test('errors: prompt longer than the context → 400 with both numbers', async () => {
  const long = 'and the LORD said '.repeat(200);
  await assert.rejects(client.completions.create({ model: 'kjv', prompt: long, max_tokens: 10 }), (e) => {
    assert.equal(e.status, 400);
    assert.match(e.message, /maximum context length is 512 tokens/);
    assert.match(e.message, /However, you requested (\d+) tokens \((\d+) in the messages, 10 in the completion\)/);
    const [, total, prompt] = e.message.match(/requested (\d+) tokens \((\d+) in/);
    assert.equal(Number(total), Number(prompt) + 10);
    assert.equal(e.code, 'context_length_exceeded');
    return true;
  });
  await assert.rejects(client.chat.completions.create({ model: 'kjv', messages: [{ role: 'user', content: 'amen' }], max_tokens: 600 }),
    (e) => { assert.equal(e.status, 400); assert.match(e.message, /600 in the completion/); return true; });
  await stillServing();
});

test('errors: unknown model and unknown route → 404', async () => {
  await assert.rejects(client.completions.create({ model: 'gpt-9', prompt: 'x', max_tokens: 1 }), (e) => {
    assert.equal(e.status, 404);
    assert.ok(e instanceof OpenAI.NotFoundError);
    assert.equal(e.code, 'model_not_found');
    return true;
  });
  await assert.rejects(client.models.retrieve('gpt-9'), (e) => e.status === 404);
  const r = await postRaw(server, '/v1/embeddings', { model: 'kjv', input: 'x' });
  assert.equal(r.status, 404);
  assertOpenAiError(r.json, 404);
  const g = await fetch(`${server.url}/v1/completions`);
  assert.equal(g.status, 405);
  assertOpenAiError(await g.json(), 405);
  await stillServing();
});

test('health and metrics: ready, vLLM names with # HELP / # TYPE, counters move', async () => {
  assert.equal((await fetch(`${server.url}/health`)).status, 200);
  const before = await metrics(server);
  await client.completions.create({ model: 'kjv', prompt: PROMPT, max_tokens: 4, temperature: 0 });
  const m = await waitKvFree(server);
  for (const name of ['num_requests_running', 'num_requests_waiting', 'gpu_cache_usage_perc', 'kv_cache_usage_perc',
    'kv_blocks_free', 'kv_blocks_total', 'prompt_tokens_total', 'generation_tokens_total',
    'time_to_first_token_seconds', 'inter_token_latency_seconds', 'time_per_output_token_seconds',
    'e2e_request_latency_seconds', 'request_queue_time_seconds', 'request_success_total']) {
    assert.match(m.__text, new RegExp(`# HELP shardlm:${name} `), name);
    assert.match(m.__text, new RegExp(`# TYPE shardlm:${name} (gauge|counter|histogram)`), name);
  }
  assert.equal(m['shardlm:generation_tokens_total'] - before['shardlm:generation_tokens_total'], 4);
  assert.ok(m['shardlm:time_to_first_token_seconds_count'] > before['shardlm:time_to_first_token_seconds_count']);
  assert.ok(m['shardlm:e2e_request_latency_seconds_count'] > before['shardlm:e2e_request_latency_seconds_count']);
  assert.ok(m['shardlm:request_success_total{model_name="kjv",finished_reason="length"}'] >= 1);
  assert.match(m.__text, /shardlm:time_to_first_token_seconds_bucket\{model_name="kjv",le="\+Inf"\} \d+/);
  assert.equal(m['shardlm:kv_cache_usage_perc'], 0);
  assert.equal(m['shardlm:kv_blocks_free'], m['shardlm:kv_blocks_total']);
});

test('raw SSE framing: data: lines, [DONE] last, usage chunk with empty choices', async () => {
  const r = await fetch(`${server.baseURL}/completions`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: 'kjv', prompt: PROMPT, max_tokens: 3, temperature: 0, stream: true, stream_options: { include_usage: true } }),
  });
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /text\/event-stream/);
  const raw = await r.text();
  const events = raw.split('\n\n').filter((e) => e.length);
  for (const e of events) assert.ok(e.startsWith('data: '), e);
  assert.equal(events.at(-1), 'data: [DONE]');
  const usage = JSON.parse(events.at(-2).slice(6));
  assert.deepEqual(usage.choices, []);
  assert.equal(usage.usage.completion_tokens, 3);
  for (const e of events.slice(0, -2)) assert.equal(JSON.parse(e.slice(6)).usage, null);
});
