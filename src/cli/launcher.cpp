#include "cli/launcher.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <thread>
#include <vector>

#include "base/clock.h"
#include "base/env.h"
#include "base/log.h"

namespace shardlm::cli {
namespace {

std::vector<std::string> g_args;
std::vector<pid_t> g_children;  // self-spawned ranks (rank 0 only)

std::string random_key() {
  std::random_device rd;
  std::string s;
  const char* hex = "0123456789abcdef";
  for (int i = 0; i < 32; ++i) s += hex[rd() % 16];
  return s;
}

void kill_children() {
  for (pid_t p : g_children) kill(p, SIGKILL);
}

// Starts ranks 1..world−1 as copies of this command, told their rank by env.
Status spawn_children(const LaunchInfo& launch, int port) {
  for (int r = 1; r < launch.world; ++r) {
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) return make_error(ErrorCode::kIo, "fork of rank {} failed", r);
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // die with the parent: no orphans
      if (getppid() != parent) _exit(1);  // the parent died before prctl
      setenv("SHARDLM_RANK", std::to_string(r).c_str(), 1);
      setenv("SHARDLM_WORLD_SIZE", std::to_string(launch.world).c_str(), 1);
      setenv("SHARDLM_LOCAL_RANK", std::to_string(r).c_str(), 1);
      setenv("SHARDLM_MASTER_ADDR", launch.master_addr.c_str(), 1);
      setenv("SHARDLM_MASTER_PORT", std::to_string(port).c_str(), 1);
      setenv("SHARDLM_JOB_KEY", launch.job_key.c_str(), 1);
      std::vector<char*> argv;
      for (auto& a : g_args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      execv("/proc/self/exe", argv.data());
      _exit(127);
    }
    g_children.push_back(pid);
  }
  SLOG_INFO("self-spawn: started {} local ranks", launch.world - 1);
  return Status::Ok();
}

// Reaps the children (bounded); true when all exited 0.
bool wait_children(double timeout_s) {
  bool ok = true;
  Deadline deadline(timeout_s);
  for (pid_t p : g_children) {
    int st = 0;
    for (;;) {
      pid_t r = waitpid(p, &st, WNOHANG);
      if (r == p) break;
      if (r < 0) {
        ok = false;
        break;
      }
      if (deadline.expired()) {
        kill(p, SIGKILL);
        waitpid(p, &st, 0);
        ok = false;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) ok = false;
  }
  g_children.clear();
  return ok;
}

[[noreturn]] void die(const std::string& msg, double grace_s) {
  std::fprintf(stderr, "shardlm: job failed: %s\n", msg.c_str());
  std::fflush(stderr);
  if (grace_s > 0) {
    kill_children();  // the job is over; only rank 0's health endpoint stays up
    std::this_thread::sleep_for(std::chrono::duration<double>(grace_s));
  }
  kill_children();
  std::_Exit(1);
}

}  // namespace

void add_dist_flags(CLI::App* sub, DistArgs* a) {
  sub->add_option("--tp,--tp-size,--tp_size,--tensor-parallel-size", a->tp,
                  "Tensor-parallel ranks (with no launcher, tp × pp > 1 starts the local ranks itself)")
      ->capture_default_str()->check(CLI::PositiveNumber);
  sub->add_option("--pp,--pp-size,--pp_size,--pipeline-parallel-size", a->pp, "Pipeline-parallel stages")
      ->capture_default_str()->check(CLI::PositiveNumber);
  sub->add_option_function<int>("--local-rank", [a](int r) { a->local_rank = r; },
                                "This process's local rank (beats LOCAL_RANK)");
  sub->add_flag("--pp-sync", a->synchronous,
                "Synchronous pipeline relay: one micro-batch at a time (deterministic tests)");
  sub->add_option("--max-in-flight", a->max_in_flight, "Pipeline micro-batches in flight (0 = pp)")
      ->capture_default_str();
  sub->add_option("--dist-timeout", a->timeout_s, "Seconds any cross-rank wait may take before the job fails")
      ->capture_default_str();
  sub->add_option("--pp-transport", a->pp_transport,
                  "How pipeline stages pass activations: host (f32 through the CPUs), nccl (bf16 GPU to GPU, "
                  "with --device cuda) or auto (nccl on GPUs, host on CPUs)")
      ->capture_default_str();
}

void add_backend_flags(CLI::App* sub, EngineConfig* engine, std::string* device, CudaEngineOptions* cuda) {
  sub->add_option("--load-format", engine->load_format,
                  "auto (the checkpoint), or dummy: random weights from config.json alone, the same in every layout")
      ->capture_default_str();
  sub->add_option("--device", *device, "cpu (the reference backend) or cuda (one GPU per rank)")->capture_default_str();
  sub->add_option("--kv-cache-fraction,--gpu-memory-utilization,--mem-fraction-static", cuda->kv_cache_fraction,
                  "With --device cuda: share of free GPU memory for the KV cache")
      ->capture_default_str()
      ->check(CLI::Range(0.01, 1.0));
}

void set_command_line(int argc, char** argv) { g_args.assign(argv, argv + argc); }

Expected<LaunchInfo> detect_cli_launch(const DistArgs& a) {
  SHARDLM_ASSIGN_OR_RETURN(LaunchInfo info, detect_launch([](const char* n) { return env_get(n); }, a.local_rank));
  const int want = a.tp * a.pp;
  if (!info.distributed() && want > 1) {
    info.launcher = LaunchInfo::Launcher::kSelfSpawn;
    info.rank = 0;
    info.world = want;
    info.local_rank = 0;
    info.master_addr = "127.0.0.1";
    info.master_port = 0;  // bound by the rendezvous, handed to the children
    info.job_key = random_key();
    return info;
  }
  if (info.world != want)
    return make_error(ErrorCode::kInvalidArgument,
                      "{} started {} ranks but --tp {} × --pp {} = {}: launch exactly {} ranks or change --tp/--pp",
                      launcher_name(info.launcher), info.world, a.tp, a.pp, want, want);
  return info;
}

int run_distributed_job(const LaunchInfo& launch, const std::string& model_dir, const DistArgs& a,
                        EngineConfig engine, const std::string& device, const CudaEngineOptions& cuda,
                        const std::function<int(Coordinator&)>& body) {
  init_logging(launch.rank, spdlog::level::to_string_view(spdlog::get_level()).data());
  const bool parent = launch.launcher == LaunchInfo::Launcher::kSelfSpawn && launch.rank == 0 &&
                      !env_get("SHARDLM_RANK");
  DistEngineOptions o;
  o.dist.tp = a.tp;
  o.dist.pp = a.pp;
  o.dist.collective_timeout_s = a.timeout_s;
  if (parent) {
    setenv("SHARDLM_JOB_KEY", launch.job_key.c_str(), 1);
    o.dist.on_rendezvous_ready = [launch](int port) { return spawn_children(launch, port); };
  }
  o.engine = engine;
  o.device = device;
  o.cuda = cuda;
  o.pp_transport = a.pp_transport;
  o.synchronous = a.synchronous;
  o.max_in_flight = a.max_in_flight;
  if (auto dir = env_get("SHARDLM_TRACE_DIR")) o.trace_dir = *dir;
  const double grace = launch.rank == 0 ? a.fatal_grace_s : 0;
  o.on_fatal = [grace](const std::string& msg) { die(msg, grace); };

  auto e = DistEngine::create(launch, model_dir, o);
  if (!e.ok()) {
    std::fprintf(stderr, "shardlm: rank %d: error: %s\n", launch.rank, e.status().to_string().c_str());
    kill_children();
    wait_children(5);
    return 1;
  }
  DistEngine& engine_ref = **e;
  if (!engine_ref.is_coordinator()) {
    Status st = engine_ref.run_worker();
    if (!st.ok()) {
      std::fprintf(stderr, "shardlm: rank %d: error: %s\n", launch.rank, st.to_string().c_str());
      std::fflush(stderr);
      std::this_thread::sleep_for(std::chrono::milliseconds(500));  // let peers read job/fatal
      std::_Exit(1);
    }
    return 0;
  }
  int code = body(*engine_ref.coordinator());
  Status st = engine_ref.finish(true);
  if (!st.ok()) {
    std::fprintf(stderr, "shardlm: rank 0 worker: %s\n", st.to_string().c_str());
    code = code ? code : 1;
  }
  e->reset();
  if (parent && !wait_children(30)) {
    std::fprintf(stderr, "shardlm: a spawned rank exited with an error\n");
    code = code ? code : 1;
  }
  return code;
}

int run_spmd_job(const LaunchInfo& launch, const DistArgs& a, const std::function<int(DistContext&)>& body) {
  init_logging(launch.rank, spdlog::level::to_string_view(spdlog::get_level()).data());
  const bool parent = launch.launcher == LaunchInfo::Launcher::kSelfSpawn && launch.rank == 0 &&
                      !env_get("SHARDLM_RANK");
  DistOptions o;
  o.tp = a.tp;
  o.pp = a.pp;
  o.collective_timeout_s = a.timeout_s;
  if (parent) {
    setenv("SHARDLM_JOB_KEY", launch.job_key.c_str(), 1);
    o.on_rendezvous_ready = [launch](int port) { return spawn_children(launch, port); };
  }
  auto ctx = DistContext::create(launch, o);
  if (!ctx.ok()) {
    std::fprintf(stderr, "shardlm: rank %d: error: %s\n", launch.rank, ctx.status().to_string().c_str());
    kill_children();
    wait_children(5);
    return 1;
  }
  (*ctx)->start_watchdog([](const std::string& msg) { die(msg, 0); });
  int code = body(**ctx);
  if (code != 0) {
    (*ctx)->report_fatal("exited with code " + std::to_string(code));
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // let peers read job/fatal
    if (launch.rank != 0) std::_Exit(code);
  }
  // Every rank leaves the rendezvous before rank 0 closes it.
  (void)(*ctx)->rendezvous().barrier("spmd_done", 60);
  ctx->reset();
  if (parent && !wait_children(30)) {
    std::fprintf(stderr, "shardlm: a spawned rank exited with an error\n");
    code = code ? code : 1;
  }
  return code;
}

int run_on_service(const char* command, const std::string& model_dir, const DistArgs& dist,
                   const EngineConfig& engine, const std::string& device, const CudaEngineOptions& cuda,
                   const std::function<int(GenerationService&)>& body) {
  auto fail = [command](const Status& st) {
    std::fprintf(stderr, "shardlm %s: error: %s\n", command, st.to_string().c_str());
    return 1;
  };
  auto launch = detect_cli_launch(dist);
  if (!launch.ok()) return fail(launch.status());
  if (device != "cpu" && device != "cuda")
    return fail(make_error(ErrorCode::kInvalidArgument, "--device must be cpu or cuda, not '{}'", device));
  if (launch->world > 1)
    return run_distributed_job(*launch, model_dir, dist, engine, device, cuda,
                               [&](Coordinator& c) { return body(c); });
  auto e = device == "cuda" ? Engine::create_cuda(model_dir, engine, cuda) : Engine::create_cpu(model_dir, engine);
  if (!e.ok()) return fail(e.status().with_context("loading " + model_dir));
  auto svc = make_local_service(std::move(*e));
  const int code = body(*svc);
  svc->shutdown(false);
  return code;
}

}  // namespace shardlm::cli
