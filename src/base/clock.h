// Monotonic clock helpers and a Deadline for bounded waits (nothing may hang).
#pragma once

#include <chrono>

namespace shardlm {

using Clock = std::chrono::steady_clock;

inline double now_seconds() {
  return std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
}

class Deadline {
 public:
  explicit Deadline(double seconds_from_now)
      : end_(Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                std::chrono::duration<double>(seconds_from_now))) {}
  bool expired() const { return Clock::now() >= end_; }
  double remaining_seconds() const {
    return std::chrono::duration<double>(end_ - Clock::now()).count();
  }

 private:
  Clock::time_point end_;
};

}  // namespace shardlm
