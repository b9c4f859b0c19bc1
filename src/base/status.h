// Errors are values in the core: every fallible function returns a Status or an
// Expected<T>; the edges (cli, serve) turn them into messages and exit codes.
#pragma once

#include <string>
#include <utility>
#include <variant>

#include <fmt/format.h>

namespace shardlm {

enum class ErrorCode {
  kOk = 0,
  kInvalidArgument,  // the caller passed something wrong (flags, shapes, ids)
  kNotFound,         // a file, tensor or key is missing
  kIo,               // the OS refused (open, mmap, read, socket)
  kFormat,           // a file is malformed (JSON, safetensors header)
  kUnsupported,      // valid input that shardlm does not implement
  kOutOfMemory,      // an allocation or the KV pool is exhausted
  kTimeout,          // a bounded wait expired
  kAborted,          // cancelled or shut down
  kInternal,         // a bug: an invariant broke
};

const char* error_code_name(ErrorCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  bool ok() const { return code_ == ErrorCode::kOk; }
  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "<code>: <message>" for logs and CLI errors.
  std::string to_string() const;

  // Prefixes context ("loading model.safetensors: ") to the message.
  Status with_context(const std::string& context) const {
    if (ok()) return *this;
    return Status(code_, context + ": " + message_);
  }

 private:
  ErrorCode code_ = ErrorCode::kOk;
  std::string message_;
};

template <typename... Args>
Status make_error(ErrorCode code, fmt::format_string<Args...> f, Args&&... args) {
  return Status(code, fmt::format(f, std::forward<Args>(args)...));
}

// Expected<T>: a value or an error Status (std::expected is C++23).
template <typename T>
class [[nodiscard]] Expected {
 public:
  Expected(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Expected(Status status) : v_(std::move(status)) {}  // NOLINT
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<1>(v_);
  }

 private:
  std::variant<T, Status> v_;
};

}  // namespace shardlm

#define SHARDLM_CONCAT_INNER(a, b) a##b
#define SHARDLM_CONCAT(a, b) SHARDLM_CONCAT_INNER(a, b)

// Returns the Status from the enclosing function if expr is an error.
#define SHARDLM_TRY(expr)                         \
  do {                                            \
    ::shardlm::Status _st = (expr);               \
    if (!_st.ok()) return _st;                    \
  } while (0)

// auto x = value of an Expected, or return its error.
#define SHARDLM_ASSIGN_OR_RETURN(lhs, expr) \
  SHARDLM_ASSIGN_OR_RETURN_IMPL(SHARDLM_CONCAT(_exp_, __LINE__), lhs, expr)
#define SHARDLM_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return tmp.status();                 \
  lhs = std::move(tmp).value()
