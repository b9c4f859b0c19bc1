// Real processes for the comm tests: fork() `world` children (the gtest process
// has no threads yet, so fork is safe), each runs a function as one rank and
// exits with its result. Rank 0 starts the rendezvous on an ephemeral port and
// publishes the real port in shared memory, so parallel ctest runs never
// collide. The parent waits with a deadline and SIGKILLs leftovers: no orphans.
#pragma once

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "base/clock.h"
#include "comm/rendezvous.h"

namespace shardlm::testing {

constexpr int kMaxRanks = 8;
constexpr const char* kTestKey = "comm-test-job-key";

struct Shared {
  std::atomic<int> port{0};
  std::atomic<int> ready{0};          // free counter for tests
  std::atomic<int64_t> mark_ns{0};    // a timestamp the parent or a rank sets (CLOCK_MONOTONIC)
  std::atomic<int64_t> seen_ns[kMaxRanks];
  std::atomic<int> seen_rank[kMaxRanks];
  char error[kMaxRanks][1024];
};

inline int64_t mono_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

inline Shared* g_shared = nullptr;

// Records a failure message for this rank (shown by the parent) and returns 1.
inline int child_fail(int rank, const std::string& msg) {
  std::fprintf(stderr, "[rank %d] FAILED: %s\n", rank, msg.c_str());
  if (g_shared && rank >= 0 && rank < kMaxRanks)
    std::snprintf(g_shared->error[rank], sizeof(g_shared->error[rank]), "%s", msg.c_str());
  return 1;
}

#define CHILD_CHECK(rank, cond, msg)                                                          \
  do {                                                                                        \
    if (!(cond)) return ::shardlm::testing::child_fail(rank, std::string(#cond " — ") + (msg)); \
  } while (0)
#define CHILD_OK(rank, st)                                                                    \
  do {                                                                                        \
    ::shardlm::Status _s = (st);                                                              \
    if (!_s.ok()) return ::shardlm::testing::child_fail(rank, #st ": " + _s.to_string());     \
  } while (0)

inline RendezvousOptions test_options(int rank, int world) {
  RendezvousOptions o;
  o.master_addr = "127.0.0.1";
  o.master_port = 0;
  o.rank = rank;
  o.world = world;
  o.job_key = kTestKey;
  o.connect_timeout_s = 30;
  o.timeout_s = 30;
  return o;
}

// In a child: rank 0 serves on an ephemeral port and publishes it; the others
// wait for it and connect.
inline Expected<std::unique_ptr<Rendezvous>> child_rendezvous(int rank, int world, RendezvousOptions o) {
  if (rank != 0) {
    Deadline d(30);
    while (g_shared->port.load() == 0) {
      if (d.expired()) return make_error(ErrorCode::kTimeout, "rank 0 never published its port");
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    o.master_port = g_shared->port.load();
  }
  auto rv = Rendezvous::create(o);
  if (rv.ok() && rank == 0) g_shared->port = (*rv)->port();
  return rv;
}
inline Expected<std::unique_ptr<Rendezvous>> child_rendezvous(int rank, int world) {
  return child_rendezvous(rank, world, test_options(rank, world));
}

class MultiProc {
 public:
  explicit MultiProc(int world) : world_(world) {
    void* p = mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    shared_ = new (p) Shared();
    for (int i = 0; i < kMaxRanks; ++i) {
      shared_->seen_ns[i] = 0;
      shared_->seen_rank[i] = -1;
    }
    g_shared = shared_;
  }
  ~MultiProc() {
    for (pid_t p : pids_)
      if (p > 0) kill(p, SIGKILL), waitpid(p, nullptr, 0);
    g_shared = nullptr;
    munmap(shared_, sizeof(Shared));
  }
  Shared* shared() { return shared_; }
  pid_t pid(int rank) const { return pids_[rank]; }

  void start(const std::function<int(int rank)>& fn) {
    std::fflush(stdout);
    std::fflush(stderr);
    for (int r = 0; r < world_; ++r) {
      pid_t p = fork();
      if (p == 0) {
        int rc = 1;
        try {
          rc = fn(r);
        } catch (const std::exception& e) {
          rc = child_fail(r, std::string("exception: ") + e.what());
        }
        std::fflush(stdout);
        std::fflush(stderr);
        _exit(rc);
      }
      pids_.push_back(p);
    }
  }

  // Exit code per rank; 128+signal when killed; -1 when it outlived the
  // deadline (then it is SIGKILLed). Ranks in `not_waited` (e.g. a stopped
  // victim) are not waited for: they are SIGKILLed once the others are done.
  std::vector<int> wait_all(double timeout_s, const std::vector<int>& not_waited = {}) {
    std::vector<int> codes(world_, -1);
    Deadline d(timeout_s);
    int left = world_ - static_cast<int>(not_waited.size());
    while (left > 0 && !d.expired()) {
      for (int r = 0; r < world_; ++r) {
        if (pids_[r] <= 0 || std::count(not_waited.begin(), not_waited.end(), r)) continue;
        int st = 0;
        if (waitpid(pids_[r], &st, WNOHANG) == pids_[r]) {
          codes[r] = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
          pids_[r] = 0;
          --left;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    for (int r = 0; r < world_; ++r)
      if (pids_[r] > 0) kill(pids_[r], SIGKILL), waitpid(pids_[r], nullptr, 0), pids_[r] = 0;
    return codes;
  }

  // Waits and asserts every rank exited 0 (or `expected[r]` when given).
  void expect_exit(double timeout_s, std::vector<int> expected = {}) {
    auto codes = wait_all(timeout_s);
    if (expected.empty()) expected.assign(world_, 0);
    for (int r = 0; r < world_; ++r)
      EXPECT_EQ(codes[r], expected[r]) << "rank " << r << (codes[r] == -1 ? " hung" : "") << ": "
                                       << shared_->error[r];
  }

 private:
  int world_;
  Shared* shared_;
  std::vector<pid_t> pids_;
};

}  // namespace shardlm::testing
