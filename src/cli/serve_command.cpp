// `shardlm serve [MODEL]`: the OpenAI-compatible server.
//
// Order of events: parse flags (vLLM / TensorRT-LLM / SGLang spellings are
// aliases; --config FILE supplies any flag) → load the tokenizer → bind and
// print "listening on http://HOST:PORT" (so --port 0 is usable by scripts) →
// load the engine while /health answers 503 → ready. SIGTERM/SIGINT: stop
// accepting, let in-flight requests finish for up to --shutdown-timeout
// seconds (a second signal skips the wait), abort the rest, exit 0.
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>

#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "base/clock.h"
#include "base/log.h"
#include "cli/commands.h"
#include "cli/default_model.h"
#include "cli/service_factory.h"
#include "serve/config_file.h"
#include "serve/http_server.h"
#include "serve/openai_server.h"
#include "tokenizer/tokenizer.h"

namespace shardlm::cli {
namespace {

// CLI11 reads --config through this: keys map onto flag names (and so onto
// every alias of a flag, since CLI11 looks options up by any of their names).
class ServeConfigFormatter : public CLI::Config {
 public:
  std::string to_config(const CLI::App*, bool, bool, std::string) const override { return {}; }
  std::vector<CLI::ConfigItem> from_config(std::istream& in) const override {
    std::stringstream ss;
    ss << in.rdbuf();
    auto entries = serve::parse_config_text(ss.str());
    if (!entries.ok()) throw CLI::ConfigError(entries.status().message());
    std::vector<CLI::ConfigItem> items;
    for (auto& e : *entries) {
      CLI::ConfigItem item;
      item.name = e.key;
      item.inputs = e.values;
      items.push_back(std::move(item));
    }
    return items;
  }
};

int fail(const Status& st) {
  std::fprintf(stderr, "shardlm serve: error: %s\n", st.to_string().c_str());
  return 1;
}

// Each open stream holds a socket: lift the soft descriptor limit to the hard one.
void raise_fd_limit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
}

struct StopSignal {
  std::mutex mu;
  std::condition_variable cv;
  int count = 0;  // signals received
};

int run_serve(ServeOptions o) {
  init_logging(0, o.log_level);
  std::string model_arg = o.model;
  if (o.model.empty()) {
    auto def = default_model_dir();
    if (!def.ok()) return fail(def.status());
    o.model = *def;
  }
  if (o.served_model_names.empty()) {
    std::string name = model_arg.empty() ? std::filesystem::path(o.model).filename().string() : model_arg;
    while (name.size() > 1 && name.back() == '/') name.pop_back();
    o.served_model_names.push_back(name);
  }
  if (o.kv_cache_fraction < 0 || o.kv_cache_fraction > 1)
    return fail(make_error(ErrorCode::kInvalidArgument, "--kv-cache-fraction must be in (0, 1]; got {}", o.kv_cache_fraction));
  if (o.tp * o.pp > 1) {  // fail before binding: nothing to serve
    auto svc = make_service(o);
    if (!svc.ok()) return fail(svc.status());
  }

  auto tok_or = Tokenizer::load(o.model);
  if (!tok_or.ok()) return fail(tok_or.status().with_context("the server needs the model's tokenizer"));
  std::shared_ptr<Tokenizer> tok = *tok_or;
  if (!o.chat_template.empty()) {
    std::ifstream f(o.chat_template);
    if (!f) return fail(make_error(ErrorCode::kNotFound, "cannot read --chat-template {}", o.chat_template));
    std::stringstream ss;
    ss << f.rdbuf();
    tok->set_chat_template(ss.str());
  }

  raise_fd_limit();
  // Signals go to one thread (sigwait) so nothing else is interrupted.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);
  auto stop = std::make_shared<StopSignal>();
  std::thread([sigs, stop] {
    for (;;) {
      int sig = 0;
      if (sigwait(&sigs, &sig) != 0) continue;
      std::lock_guard<std::mutex> lk(stop->mu);
      ++stop->count;
      stop->cv.notify_all();
    }
  }).detach();

  serve::OpenAiServerConfig sc;
  sc.served_model_names = o.served_model_names;
  sc.model_root = o.model;
  sc.request_timeout_s = o.request_timeout_s;
  sc.queue_timeout_s = o.queue_timeout_s;
  serve::OpenAiServer server(sc);
  serve::HttpServerOptions ho;
  ho.host = o.host;
  ho.port = o.port;
  ho.max_connections = o.max_connections;
  serve::HttpServer http(ho, [&server](const serve::HttpRequest& r, serve::HttpResponseWriter& w) { server.handle(r, w); });
  if (Status st = http.bind(); !st.ok()) return fail(st);
  const bool v6 = o.host.find(':') != std::string::npos;
  std::printf("listening on http://%s%s%s:%d\n", v6 ? "[" : "", o.host.c_str(), v6 ? "]" : "", http.port());
  std::fflush(stdout);
  std::thread http_thread([&http] { http.serve(); });

  SLOG_INFO("loading {} (served as '{}')", o.model, o.served_model_names[0]);
  if (o.debug_delay_load_s > 0)  // tests: a window in which the server answers 503 "loading"
    std::this_thread::sleep_for(std::chrono::duration<double>(o.debug_delay_load_s));
  auto svc_or = make_service(o);
  if (!svc_or.ok()) {
    http.stop_accepting();
    http_thread.join();
    return fail(svc_or.status().with_context("loading " + o.model));
  }
  std::shared_ptr<GenerationService> service = std::move(*svc_or);
  server.set_ready(service, tok);
  {
    const ServiceStats s = service->stats();
    SLOG_INFO("ready: max_model_len {}, {} KV blocks", s.max_model_len, s.kv_blocks_total);
  }
  std::fprintf(stderr, "shardlm serve: ready\n");

  {
    std::unique_lock<std::mutex> lk(stop->mu);
    stop->cv.wait(lk, [&] { return stop->count > 0; });
  }
  std::fprintf(stderr, "shardlm serve: stopping: no new connections; draining %lld request(s) for up to %g s\n",
               static_cast<long long>(server.in_flight()), o.shutdown_timeout_s);
  server.begin_shutdown();
  http.stop_accepting();
  const Deadline drain(o.shutdown_timeout_s);
  while (!drain.expired() && !server.wait_idle(std::min(0.2, std::max(0.0, drain.remaining_seconds())))) {
    std::lock_guard<std::mutex> lk(stop->mu);
    if (stop->count > 1) break;  // a second signal: stop now
  }
  if (server.in_flight() > 0)
    std::fprintf(stderr, "shardlm serve: aborting %lld request(s)\n", static_cast<long long>(server.in_flight()));
  service->shutdown(/*drain=*/false);  // aborts what is left; their streams end with finish_reason "abort"
  server.wait_idle(10);
  http.wait_no_connections(5);
  http_thread.join();
  std::fprintf(stderr, "shardlm serve: stopped\n");
  return 0;
}

}  // namespace

void register_serve_command(CLI::App& app, CommandRunner* run) {
  auto o = std::make_shared<ServeOptions>();
  auto* sub = app.add_subcommand(
      "serve",
      "Serve a model over the OpenAI API (/v1/completions, /v1/chat/completions, /v1/models),\n"
      "with /health and Prometheus /metrics. Without MODEL, serves the embedded default model.");
  sub->config_formatter(std::make_shared<ServeConfigFormatter>());
  sub->set_config("--config", "", "Flags from a file: JSON object or 'key: value' lines (keys are flag names)");
  sub->add_option("model,--model,-m", o->model, "HF model directory (config.json, *.safetensors, tokenizer.json)");
  sub->add_option("--served-model-name", o->served_model_names,
                  "Name(s) clients use in 'model' (default: MODEL as given, or the default model's folder name)");
  sub->add_option("--tp,--tp-size,--tp_size,--tensor-parallel-size,--tensor_parallel_size", o->tp,
                  "Tensor-parallel ranks")->capture_default_str();
  sub->add_option("--pp,--pp-size,--pp_size,--pipeline-parallel-size,--pipeline_parallel_size", o->pp,
                  "Pipeline-parallel stages")->capture_default_str();
  sub->add_option("--max-num-seqs,--max-batch-size,--max_batch_size,--max-running-requests", o->engine.scheduler.max_num_seqs,
                  "Sequences per step at most")->capture_default_str()->check(CLI::PositiveNumber);
  sub->add_option("--max-num-batched-tokens,--max-num-tokens,--max_num_tokens", o->engine.scheduler.max_num_batched_tokens,
                  "Tokens per step at most (prefill is chunked to fit)")->capture_default_str()->check(CLI::PositiveNumber);
  sub->add_option("--kv-cache-fraction,--gpu-memory-utilization,--mem-fraction-static,--kv_cache_free_gpu_memory_fraction",
                  o->kv_cache_fraction, "Share of free memory the KV cache may take, in (0, 1] (0 = default sizing)")
      ->capture_default_str();
  sub->add_option("--max-model-len,--context-length,--max_seq_len", o->engine.max_model_len,
                  "Context length limit (0 = the model's)")->capture_default_str();
  sub->add_option("--block-size", o->engine.block_size, "Tokens per KV-cache block")->capture_default_str();
  sub->add_option("--num-kv-blocks", o->engine.num_kv_blocks, "KV-cache blocks (0 = size automatically)")->capture_default_str();
  sub->add_option("--seed", o->engine.seed, "Seed drawing per-request seeds for requests without one")->capture_default_str();
  sub->add_option("--chat-template", o->chat_template, "Jinja chat template file overriding the tokenizer's");
  sub->add_option("--host", o->host, "Address to listen on")->capture_default_str();
  sub->add_option("--port", o->port, "Port to listen on (0: any free port; the 'listening on' line says which)")
      ->capture_default_str()->check(CLI::Range(0, 65535));
  sub->add_option("--max-connections", o->max_connections,
                  "Open HTTP connections at most (each stream holds one)")->capture_default_str()->check(CLI::PositiveNumber);
  sub->add_option("--request-timeout", o->request_timeout_s, "Abort a request after this many seconds (0 = never)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  sub->add_option("--queue-timeout", o->queue_timeout_s,
                  "Abort a request that waits this many seconds for its first token (0 = never)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  sub->add_option("--shutdown-timeout", o->shutdown_timeout_s,
                  "On SIGTERM/SIGINT, seconds to let in-flight requests finish before aborting them")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  sub->add_option("--debug-delay-load", o->debug_delay_load_s, "Testing: wait this long before loading the model")
      ->group("");  // hidden
  sub->add_option("--log-level", o->log_level, "debug, info, warn, error or off")->capture_default_str();
  sub->callback([o, run] { *run = [o] { return run_serve(*o); }; });
}

}  // namespace shardlm::cli
