// `shardlm serve [MODEL]`: the OpenAI-compatible server.
//
// Order of events: parse flags (vLLM / TensorRT-LLM / SGLang spellings are
// aliases; --config FILE supplies any flag) → load the tokenizer → bind and
// print "listening on http://HOST:PORT" (so --port 0 is usable by scripts) →
// load the engine while /health answers 503 → ready. SIGTERM/SIGINT: stop
// accepting, let in-flight requests finish for up to --shutdown-timeout
// seconds (a second signal skips the wait), abort the rest, exit 0.
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>

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

// --config FILE: CLI11 2.1 reads config files only for the top-level app, so
// the serve subcommand applies its own after parsing. Keys name flags (any
// alias, '-' or '_'); a flag given on the command line wins over the file.
void apply_config_file(CLI::App* sub, const std::string& path) {
  std::ifstream f(path);
  if (!f) throw CLI::FileError::Missing(path);
  std::stringstream ss;
  ss << f.rdbuf();
  auto entries = serve::parse_config_text(ss.str());
  if (!entries.ok()) throw CLI::ConfigError(path + ": " + entries.status().message());
  for (const auto& e : *entries) {
    CLI::Option* opt = sub->get_option_no_throw("--" + e.key);
    if (!opt && e.key.size() == 1) opt = sub->get_option_no_throw("-" + e.key);
    if (!opt || e.key == "config")
      throw CLI::ConfigError(path + ": unknown key '" + e.key + "' (keys are `shardlm serve` flag names)");
    if (opt->count() > 0) continue;  // the command line wins
    if (e.values.empty()) continue;
    opt->add_result(e.values);
    opt->run_callback();  // converts and validates like a command-line value
  }
}

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

// SIGINT/SIGTERM: the handler only writes a byte to a pipe (async-signal-safe);
// a watcher thread counts them. Handlers, unlike a blocked signal mask, are
// not inherited by exec'd children (self-spawned ranks keep default SIGTERM).
struct StopSignal {
  std::mutex mu;
  std::condition_variable cv;
  int count = 0;  // signals received
};
int g_signal_pipe[2] = {-1, -1};

extern "C" void on_stop_signal(int) {
  const int saved = errno;
  char c = 1;
  [[maybe_unused]] ssize_t n = ::write(g_signal_pipe[1], &c, 1);
  errno = saved;
}

std::shared_ptr<StopSignal> install_stop_signals() {
  auto stop = std::make_shared<StopSignal>();
  if (::pipe2(g_signal_pipe, O_CLOEXEC) != 0) return stop;
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::thread([stop] {
    char c;
    while (::read(g_signal_pipe[0], &c, 1) >= 0 || errno == EINTR) {
      std::lock_guard<std::mutex> lk(stop->mu);
      ++stop->count;
      stop->cv.notify_all();
    }
  }).detach();
  return stop;
}

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
  if (o.device != "cpu" && o.device != "cuda")
    return fail(make_error(ErrorCode::kInvalidArgument, "--device must be cpu or cuda, not '{}'", o.device));
  auto launch = detect_cli_launch(o.dist);
  if (!launch.ok()) return fail(launch.status());
  signal(SIGPIPE, SIG_IGN);
  if (launch->rank != 0)  // a worker rank: never reaches serving code (DESIGN §1)
    return run_with_service(o, *launch, [](GenerationService&) { return 0; });

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
  auto stop = install_stop_signals();

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

  SLOG_INFO("loading {} (served as '{}', tp {} pp {})", o.model, o.served_model_names[0], o.dist.tp, o.dist.pp);
  if (o.debug_delay_load_s > 0)  // tests: a window in which the server answers 503 "loading"
    std::this_thread::sleep_for(std::chrono::duration<double>(o.debug_delay_load_s));

  bool served = false;
  const double load_start = now_seconds();
  const int code = run_with_service(o, *launch, [&](GenerationService& svc) {
    served = true;
    // Non-owning: the service outlives every use (detached below before it goes).
    server.set_ready(std::shared_ptr<GenerationService>(&svc, [](GenerationService*) {}), tok);
    const ServiceStats s = svc.stats();
    SLOG_INFO("ready: max_model_len {}, {} KV blocks", s.max_model_len, s.kv_blocks_total);
    // Time to ready: weights, KV cache, warmup (and graph capture on GPUs).
    std::fprintf(stderr, "shardlm serve: ready in %.2f s\n", now_seconds() - load_start);
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
    svc.shutdown(/*drain=*/false);  // aborts what is left; their streams end with finish_reason "abort"
    server.wait_idle(10);
    http.wait_no_connections(5);
    server.set_ready(nullptr, tok);
    return 0;
  });
  http.stop_accepting();
  http_thread.join();
  if (!served) return code ? code : 1;
  std::fprintf(stderr, "shardlm serve: stopped\n");
  return code;
}

}  // namespace

void register_serve_command(CLI::App& app, CommandRunner* run) {
  auto o = std::make_shared<ServeOptions>();
  auto* sub = app.add_subcommand(
      "serve",
      "Serve a model over the OpenAI API (/v1/completions, /v1/chat/completions, /v1/models),\n"
      "with /health and Prometheus /metrics. Without MODEL, serves the embedded default model.");
  auto config_path = std::make_shared<std::string>();
  sub->add_option("--config", *config_path,
                  "Flags from a file: a JSON object or 'key: value' lines; keys are flag names (any alias, - or _)");
  sub->add_option("model,--model,-m", o->model, "HF model directory (config.json, *.safetensors, tokenizer.json)");
  sub->add_option("--served-model-name", o->served_model_names,
                  "Name(s) clients use in 'model' (default: MODEL as given, or the default model's folder name)");
  add_dist_flags(sub, &o->dist);  // --tp/--pp with the vLLM, TRT-LLM and SGLang spellings
  sub->add_option("--max-num-seqs,--max-batch-size,--max_batch_size,--max-running-requests", o->engine.scheduler.max_num_seqs,
                  "Sequences per step at most")->capture_default_str()->check(CLI::PositiveNumber);
  sub->add_option("--max-num-batched-tokens,--max-num-tokens,--max_num_tokens", o->engine.scheduler.max_num_batched_tokens,
                  "Tokens per step at most (prefill is chunked to fit)")->capture_default_str()->check(CLI::PositiveNumber);
  sub->add_option("--load-format", o->engine.load_format,
                  "auto (the checkpoint), or dummy: random weights from config.json alone, the same in every layout")
      ->capture_default_str();
  sub->add_option("--device", o->device, "cpu (the reference backend) or cuda (one GPU per rank)")
      ->capture_default_str();
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
  sub->callback([o, run, sub, config_path] {
    if (!config_path->empty()) apply_config_file(sub, *config_path);
    *run = [o] { return run_serve(*o); };
  });
}

}  // namespace shardlm::cli
