// Starts a real `shardlm serve` on an ephemeral port (--port 0; the server
// prints "listening on http://HOST:PORT") and waits until /health says ready.
// SHARDLM_BIN names the binary (ctest sets it); SHARDLM_SERVE_TEST_SCALE
// (0..1] shrinks the load tests for slow builds (sanitizers).
import { spawn } from 'node:child_process';
import { once } from 'node:events';

export const BIN = process.env.SHARDLM_BIN || 'build/shardlm';
export const SCALE = Math.min(1, Math.max(0.01, Number(process.env.SHARDLM_SERVE_TEST_SCALE || '1')));

export async function startServer(extraArgs = [], { waitReady = true, timeoutMs = 120000 } = {}) {
  const args = ['serve', '--host', '127.0.0.1', '--port', '0', '--log-level', 'warn', ...extraArgs];
  const proc = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr += d; });
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "listening on" line within ${timeoutMs} ms; stderr:\n${stderr}`)), timeoutMs);
    proc.stdout.on('data', (d) => {
      stdout += d;
      const m = stdout.match(/listening on (http:\/\/\S+)/);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`shardlm serve exited ${code} before listening; stderr:\n${stderr}`)); });
  });
  const server = {
    proc,
    url,
    baseURL: `${url}/v1`,
    stderr: () => stderr,
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      proc.kill(signal);
      const [code] = await once(proc, 'exit');
      return code;
    },
  };
  if (waitReady) await waitHealthy(server, timeoutMs);
  return server;
}

export async function waitHealthy(server, timeoutMs = 120000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      const r = await fetch(`${server.url}/health`);
      if (r.status === 200) return;
    } catch { /* not up yet */ }
    if (Date.now() > end) throw new Error(`server not healthy within ${timeoutMs} ms; stderr:\n${server.stderr()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// Prometheus text → { 'name{labels}': value, ... } plus bare names for single series.
export async function metrics(server) {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const out = {};
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    const key = line.slice(0, i);
    const value = Number(line.slice(i + 1));
    out[key] = value;
    const bare = key.replace(/\{.*\}$/, '');
    if (!key.includes(',')) out[bare] = value;  // series with no label beyond model_name
  }
  out.__text = text;
  return out;
}

// Polls /metrics until the engine is idle and every KV block is free.
export async function waitKvFree(server, timeoutMs = 60000) {
  const end = Date.now() + timeoutMs;
  let m;
  for (;;) {
    m = await metrics(server);
    if (m['shardlm:num_requests_running'] === 0 && m['shardlm:num_requests_waiting'] === 0 &&
        m['shardlm:kv_cache_usage_perc'] === 0 && m['shardlm:kv_blocks_free'] === m['shardlm:kv_blocks_total']) return m;
    if (Date.now() > end) return m;
    await new Promise((r) => setTimeout(r, 100));
  }
}

// POST JSON with plain fetch (for the cases the openai client cannot send).
export async function postRaw(server, path, body, headers = {}) {
  const r = await fetch(`${server.url}${path}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, text, json };
}

// Reads an SSE response body: returns the parsed `data:` payloads ('[DONE]' kept as a string).
export async function readSse(response, { onEvent } = {}) {
  const events = [];
  const decoder = new TextDecoder();
  let buf = '';
  for await (const chunk of response.body) {
    buf += decoder.decode(chunk, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, i);
      buf = buf.slice(i + 2);
      if (!ev.startsWith('data: ')) continue;
      const payload = ev.slice(6);
      const item = payload === '[DONE]' ? payload : JSON.parse(payload);
      events.push(item);
      if (onEvent && onEvent(item, events) === false) return events;
    }
  }
  return events;
}

export function assertOpenAiError(json, status, { type, param, code } = {}) {
  if (!json || typeof json.error !== 'object') throw new Error(`expected an OpenAI error body, got ${JSON.stringify(json)}`);
  for (const k of ['message', 'type', 'param', 'code'])
    if (!(k in json.error)) throw new Error(`error body lacks "${k}": ${JSON.stringify(json)}`);
  if (typeof json.error.message !== 'string' || !json.error.message) throw new Error('empty error message');
  if (type && json.error.type !== type) throw new Error(`type ${json.error.type} != ${type}`);
  if (param !== undefined && json.error.param !== param) throw new Error(`param ${json.error.param} != ${param}`);
  if (code !== undefined && json.error.code !== code) throw new Error(`code ${json.error.code} != ${code}`);
}
