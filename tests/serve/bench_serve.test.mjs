// `shardlm bench serve` against our own server (small: 32 prompts, concurrency
// 8): prints the table (visible in the ctest log) and checks the JSON figures.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { BIN, startServer, waitKvFree, SCALE } from './server_util.mjs';

test('bench serve: 32 prompts at concurrency 8, completions and chat, table + JSON', async () => {
  const server = await startServer();
  try {
    const n = Math.max(8, Math.round(32 * SCALE));
    const out = join(mkdtempSync(join(tmpdir(), 'shardlm-bench-')), 'bench.json');
    const r = spawnSync(BIN, ['bench', 'serve', '--base-url', server.url, '--num-prompts', String(n), '--concurrency', '8',
      '--input-len', '32', '--output-len', '16', '--json-out', out], { encoding: 'utf8', timeout: 300000 });
    console.log(r.stdout);
    assert.equal(r.status, 0, r.stderr + r.stdout);
    assert.match(r.stdout, /Serving Benchmark Result/);
    assert.match(r.stdout, /Mean TTFT \(ms\):/);
    assert.match(r.stdout, /P99 ITL \(ms\):/);
    const j = JSON.parse(readFileSync(out, 'utf8'));
    assert.equal(j.completed, n);
    assert.equal(j.failed, 0);
    assert.equal(j.total_output_tokens, n * 16);  // ignore_eos: every request runs to --output-len
    for (const k of ['mean_ttft_ms', 'median_ttft_ms', 'p90_ttft_ms', 'p99_ttft_ms', 'mean_tpot_ms', 'mean_itl_ms', 'p99_e2el_ms',
      'request_throughput', 'output_throughput', 'total_token_throughput'])
      assert.ok(j[k] > 0, `${k} = ${j[k]}`);
    assert.ok(j.p99_ttft_ms >= j.median_ttft_ms);

    // chat endpoint, Poisson arrivals, JSON on stdout
    const c = spawnSync(BIN, ['bench', 'serve', '--base-url', `${server.url}/v1`, '--endpoint', 'chat', '--num-prompts', '8',
      '--request-rate', '50', '--input-len', '8', '--output-len', '4', '--json'], { encoding: 'utf8', timeout: 300000 });
    assert.equal(c.status, 0, c.stderr + c.stdout);
    const cj = JSON.parse(c.stdout);
    assert.equal(cj.completed, 8);
    assert.equal(cj.request_rate, 50);
    await waitKvFree(server);
  } finally {
    assert.equal(await server.stop(), 0);
  }
});

test('bench serve: a server that is not there → every request fails, exit 1', () => {
  const r = spawnSync(BIN, ['bench', 'serve', '--base-url', 'http://127.0.0.1:9', '--model', 'x', '--num-prompts', '2'],
    { encoding: 'utf8', timeout: 60000 });
  assert.equal(r.status, 1);
  assert.match(r.stdout, /Failed requests:\s+2/);
});
