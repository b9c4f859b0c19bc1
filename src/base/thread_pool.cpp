#include "base/thread_pool.h"

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

namespace shardlm {
namespace {

class Pool {
 public:
  explicit Pool(int n) {
    for (int i = 0; i < n; ++i) workers_.emplace_back([this] { loop(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs tasks[0] on the caller and the rest on workers; returns when all are done.
  void run(const std::vector<std::function<void()>>& tasks) {
    std::unique_lock<std::mutex> run_lock(run_mu_);  // one parallel region at a time
    {
      std::lock_guard<std::mutex> lk(mu_);
      for (size_t i = 1; i < tasks.size(); ++i) queue_.push_back(&tasks[i]);
      pending_ = tasks.size() - 1;
    }
    cv_.notify_all();
    if (!tasks.empty()) tasks[0]();
    std::unique_lock<std::mutex> lk(mu_);
    done_cv_.wait(lk, [this] { return pending_ == 0; });
  }

 private:
  void loop() {
    for (;;) {
      const std::function<void()>* task = nullptr;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [this] { return stop_ || !queue_.empty(); });
        if (stop_ && queue_.empty()) return;
        task = queue_.back();
        queue_.pop_back();
      }
      (*task)();
      {
        std::lock_guard<std::mutex> lk(mu_);
        if (--pending_ == 0) done_cv_.notify_all();
      }
    }
  }

  std::vector<std::thread> workers_;
  std::mutex mu_, run_mu_;
  std::condition_variable cv_, done_cv_;
  std::vector<const std::function<void()>*> queue_;
  size_t pending_ = 0;
  bool stop_ = false;
};

int configured_threads() {
  if (const char* v = std::getenv("SHARDLM_NUM_THREADS")) {
    int n = std::atoi(v);
    if (n >= 1) return n;
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

Pool& pool() {
  static Pool p(configured_threads() - 1);
  return p;
}

thread_local bool in_parallel_region = false;

}  // namespace

int num_pool_threads() { return pool().size(); }

void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t min_chunk) {
  if (n <= 0) return;
  int64_t threads = num_pool_threads();
  // Nested regions run inline: the pool is busy with the outer one.
  if (in_parallel_region || threads == 1 || n < 2 * std::max<int64_t>(1, min_chunk)) {
    fn(0, n);
    return;
  }
  threads = std::min<int64_t>(threads, n / std::max<int64_t>(1, min_chunk));
  int64_t chunk = (n + threads - 1) / threads;
  std::vector<std::function<void()>> tasks;
  for (int64_t b = 0; b < n; b += chunk) {
    int64_t e = std::min(n, b + chunk);
    tasks.emplace_back([&fn, b, e] {
      in_parallel_region = true;
      fn(b, e);
      in_parallel_region = false;
    });
  }
  pool().run(tasks);
}

}  // namespace shardlm
