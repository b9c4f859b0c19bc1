// Server lifecycle: 503 while loading, errors after a stream started (request
// timeout), SIGTERM drain and abort (exit 0), CLI aliases and --config.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';

import { BIN, SCALE, startServer, waitHealthy, postRaw, assertOpenAiError, readSse, waitKvFree } from './server_util.mjs';

const PROMPT = 'In the beginning God created';

test('503 in the OpenAI shape while the model loads, then ready', async () => {
  const server = await startServer(['--debug-delay-load', '3'], { waitReady: false });
  try {
    const h = await fetch(`${server.url}/health`);
    assert.equal(h.status, 503);
    assertOpenAiError(await h.json(), 503);
    const r = await postRaw(server, '/v1/completions', { model: 'kjv', prompt: 'x', max_tokens: 1 });
    assert.equal(r.status, 503);
    assertOpenAiError(r.json, 503, { code: 'model_loading' });
    const client = new OpenAI({ baseURL: server.baseURL, apiKey: 'unused', maxRetries: 0 });
    await assert.rejects(client.chat.completions.create({ model: 'kjv', messages: [{ role: 'user', content: 'x' }] }),
      (e) => e.status === 503);
    await waitHealthy(server);
    const ok = await client.completions.create({ model: 'kjv', prompt: 'And', max_tokens: 2, temperature: 0 });
    assert.equal(ok.usage.completion_tokens, 2);
  } finally {
    assert.equal(await server.stop(), 0);
  }
});

test('request timeout: stream gets a data: error event then [DONE]; non-stream gets 408; KV freed', async () => {
  const server = await startServer(['--request-timeout', '0.3']);
  try {
    const client = new OpenAI({ baseURL: server.baseURL, apiKey: 'unused', maxRetries: 0 });
    // 480 tokens take far longer than 0.3 s on any CPU.
    const body = { model: 'kjv', messages: [{ role: 'user', content: 'amen' }], max_tokens: 480, ignore_eos: true, temperature: 0, stream: true };
    const r = await fetch(`${server.baseURL}/chat/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
    assert.equal(r.status, 200);
    const events = await readSse(r);
    assert.equal(events.at(-1), '[DONE]');
    const err = events.at(-2);
    assertOpenAiError(err, 408, { code: 'request_timeout' });
    assert.equal(events[0].choices[0].delta.role, 'assistant');
    // The official client surfaces the error event as an exception.
    const stream = await client.chat.completions.create(body);
    await assert.rejects((async () => { for await (const _ of stream); })(), (e) => { assert.match(e.message, /request-timeout/); return true; });
    // Non-streaming: 408.
    await assert.rejects(client.completions.create({ model: 'kjv', prompt: PROMPT, max_tokens: 480, ignore_eos: true }), (e) => e.status === 408);
    const m = await waitKvFree(server);
    assert.equal(m['shardlm:kv_blocks_free'], m['shardlm:kv_blocks_total']);
    // still serving
    const ok = await client.completions.create({ model: 'kjv', prompt: 'And', max_tokens: 2, temperature: 0 });
    assert.equal(ok.usage.completion_tokens, 2);
  } finally {
    assert.equal(await server.stop(), 0);
  }
});

test('queue timeout: a request that never gets a slot is aborted with 503; the running one is untouched', async () => {
  // One sequence at a time: the second request can only wait in the queue.
  const server = await startServer(['--max-num-seqs', '1', '--queue-timeout', '0.5']);
  try {
    const client = new OpenAI({ baseURL: server.baseURL, apiKey: 'unused', maxRetries: 0 });
    // Long enough to outlast the queue timeout (sanitizer builds are ~10x slower per token).
    const longTokens = SCALE < 1 ? 64 : 480;
    const long = client.completions.create({ model: 'kjv', prompt: PROMPT, max_tokens: longTokens, ignore_eos: true, temperature: 0 });
    await new Promise((r) => setTimeout(r, 100));
    await assert.rejects(client.completions.create({ model: 'kjv', prompt: 'And', max_tokens: 2 }), (e) => {
      assert.equal(e.status, 503);
      assert.equal(e.code, 'queue_timeout');
      return true;
    });
    const done = await long;
    assert.equal(done.usage.completion_tokens, longTokens);
    await waitKvFree(server);
  } finally {
    assert.equal(await server.stop(), 0);
  }
});

test('SIGTERM drains in-flight streams, refuses new connections, exits 0', async () => {
  const server = await startServer(['--shutdown-timeout', '60']);
  const body = { model: 'kjv', prompt: PROMPT, max_tokens: 40, ignore_eos: true, temperature: 0, stream: true };
  const r = await fetch(`${server.baseURL}/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  let signalled = false;
  const events = await readSse(r, {
    onEvent: () => { if (!signalled) { signalled = true; server.proc.kill('SIGTERM'); } },
  });
  assert.equal(events.at(-1), '[DONE]');
  const finish = events.filter((e) => e !== '[DONE]').map((e) => e.choices[0]?.finish_reason).filter(Boolean);
  assert.deepEqual(finish, ['length'], 'the drained request ran to its end');
  const code = await server.stop();
  assert.equal(code, 0);
  await assert.rejects(fetch(`${server.url}/health`));
});

test('SIGTERM with --shutdown-timeout 0.2 aborts long streams and exits 0', async () => {
  const server = await startServer(['--shutdown-timeout', '0.2']);
  const body = { model: 'kjv', prompt: PROMPT, max_tokens: 480, ignore_eos: true, temperature: 0, stream: true };
  const r = await fetch(`${server.baseURL}/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  let signalled = false;
  const events = await readSse(r, {
    onEvent: () => { if (!signalled) { signalled = true; server.proc.kill('SIGTERM'); } },
  });
  assert.equal(events.at(-1), '[DONE]');
  const finish = events.filter((e) => e !== '[DONE]').map((e) => e.choices[0]?.finish_reason).filter(Boolean);
  assert.deepEqual(finish, ['abort']);
  assert.equal(await server.stop(), 0);
});

// A torchrun-style environment that claims 5 ranks makes serve stop at once
// with "--tp T × --pp P = N": a cheap probe of what the flags parsed to.
const PROBE_ENV = { ...process.env, RANK: '0', WORLD_SIZE: '5', LOCAL_RANK: '0', MASTER_ADDR: '127.0.0.1' };
function probe(args) {
  const r = spawnSync(BIN, ['serve', '--port', '0', ...args], { encoding: 'utf8', timeout: 60000, env: PROBE_ENV });
  assert.notEqual(r.status, 0, `${args.join(' ')}: ${r.stderr}`);
  return r.stderr + r.stdout;
}

test('CLI aliases: every tp/pp spelling, in flags and in --config (JSON or YAML-ish)', () => {
  for (const flag of ['--tp', '--tp-size', '--tp_size', '--tensor-parallel-size'])
    assert.match(probe([flag, '2']), /--tp 2 × --pp 1 = 2/, flag);
  for (const flag of ['--pp', '--pp-size', '--pp_size', '--pipeline-parallel-size'])
    assert.match(probe([flag, '2']), /--tp 1 × --pp 2 = 2/, flag);
  const dir = mkdtempSync(join(tmpdir(), 'shardlm-serve-'));
  const yaml = join(dir, 'c.yaml');
  writeFileSync(yaml, '# serve config\ntensor_parallel_size: 2\nport: 0\n');
  assert.match(probe(['--config', yaml]), /--tp 2 × --pp 1/);
  const json = join(dir, 'c.json');
  writeFileSync(json, JSON.stringify({ 'pp-size': 2, host: '127.0.0.1', tp_size: 2 }));
  assert.match(probe(['--config', json]), /--tp 2 × --pp 2 = 4/);
  // A flag on the command line beats the file.
  assert.match(probe(['--config', json, '--pp', '1', '--tp_size', '3']), /--tp 3 × --pp 1 = 3/);
  // Unknown keys are an error naming them.
  writeFileSync(yaml, 'no_such_flag: 1\n');
  const r = spawnSync(BIN, ['serve', '--config', yaml], { encoding: 'utf8', timeout: 60000 });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr + r.stdout, /no.such.flag/);
});

test('--config applies batch/token/KV aliases and --served-model-name', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shardlm-serve-'));
  const yaml = join(dir, 'c.yaml');
  writeFileSync(yaml, [
    'served_model_name: [my-kjv, kjv-alias]',
    'max_batch_size: 4',            // TRT-LLM spelling of max-num-seqs
    'max-num-tokens: 256',          // TRT-LLM / SGLang spelling of max-num-batched-tokens
    'mem_fraction_static: 0.5',     // SGLang spelling of the KV fraction
    'max_running_requests: 4',
  ].join('\n'));
  const server = await startServer(['--config', yaml]);
  try {
    const client = new OpenAI({ baseURL: server.baseURL, apiKey: 'unused', maxRetries: 0 });
    const ids = (await client.models.list()).data.map((m) => m.id);
    assert.deepEqual(ids, ['my-kjv', 'kjv-alias']);
    const r = await client.completions.create({ model: 'kjv-alias', prompt: 'And', max_tokens: 2, temperature: 0 });
    assert.equal(r.model, 'my-kjv');
    await assert.rejects(client.completions.create({ model: 'kjv', prompt: 'And', max_tokens: 2 }), (e) => e.status === 404);
  } finally {
    assert.equal(await server.stop(), 0);
  }
});

// Sanitizer builds: the agreed warmup (up to 2048-token forwards on each rank)
// takes minutes there, so only the normal build runs this one.
test('--tp 2 (self-spawned ranks): greedy output equals tp 1, /health ok, SIGTERM → exit 0',
  { skip: SCALE < 1 ? 'sanitizer build: tp 2 warmup takes minutes' : false }, async () => {
  const one = await startServer();
  const two = await startServer(['--tp', '2']);
  try {
    const body = { model: 'kjv', prompt: PROMPT, max_tokens: 12, temperature: 0 };
    const a = await postRaw(one, '/v1/completions', body);
    const b = await postRaw(two, '/v1/completions', body);
    assert.equal(b.status, 200, b.text);
    assert.equal(b.json.choices[0].text, a.json.choices[0].text);
    assert.deepEqual(b.json.usage, a.json.usage);
    assert.equal((await fetch(`${two.url}/health`)).status, 200);
    const m = await waitKvFree(two);
    assert.equal(m['shardlm:kv_blocks_free'], m['shardlm:kv_blocks_total']);
  } finally {
    assert.equal(await two.stop(), 0, two.stderr());
    assert.equal(await one.stop(), 0);
  }
});
