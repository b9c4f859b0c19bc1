// A tiny binary codec for the control messages ranks exchange (schedules,
// counts, sampled tokens). Little-endian PODs, length-prefixed vectors and
// strings. Reading is bounds-checked: a short or malformed message is an
// error, never an out-of-range read (messages cross process boundaries).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "base/status.h"

namespace shardlm::wire {

class Writer {
 public:
  template <typename T>
  void put(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    buf_.append(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  template <typename T>
  void put_vec(const std::vector<T>& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    put<uint64_t>(v.size());
    if (!v.empty()) buf_.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
  }
  void put_str(const std::string& s) {
    put<uint64_t>(s.size());
    buf_.append(s);
  }
  std::string take() { return std::move(buf_); }

 private:
  std::string buf_;
};

class Reader {
 public:
  explicit Reader(const std::string& s) : p_(s.data()), end_(s.data() + s.size()) {}
  template <typename T>
  bool get(T* v) {
    if (static_cast<size_t>(end_ - p_) < sizeof(T)) return fail();
    std::memcpy(v, p_, sizeof(T));
    p_ += sizeof(T);
    return true;
  }
  template <typename T>
  bool get_vec(std::vector<T>* v) {
    uint64_t n;
    if (!get(&n) || n > static_cast<uint64_t>(end_ - p_) / sizeof(T)) return fail();
    v->resize(n);
    if (n) std::memcpy(v->data(), p_, n * sizeof(T));
    p_ += n * sizeof(T);
    return true;
  }
  bool get_str(std::string* s) {
    uint64_t n;
    if (!get(&n) || n > static_cast<uint64_t>(end_ - p_)) return fail();
    s->assign(p_, n);
    p_ += n;
    return true;
  }
  bool ok() const { return ok_; }
  bool at_end() const { return p_ == end_; }

 private:
  bool fail() {
    ok_ = false;
    return false;
  }
  const char* p_;
  const char* end_;
  bool ok_ = true;
};

}  // namespace shardlm::wire
