// Internal to the rendezvous: TCP helpers and the authenticated frame format.
//
//   frame = u32 length (big-endian, of what follows) ‖ mac[32] ‖ body
//   mac   = HMAC-SHA256(job key, body)
//   body  = u8 type ‖ u64 request id ‖ payload (u32/i64 big-endian, strings as
//           u32 length ‖ bytes)
//
// A frame whose MAC does not verify is never applied. Partial reads are
// buffered until a whole frame is present; a length above kMaxFrame is treated
// as garbage and the connection dropped.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/clock.h"
#include "base/status.h"

namespace shardlm::rdzv {

constexpr uint32_t kMaxFrame = 64u << 20;

enum class Msg : uint8_t {
  // client → server
  kHello = 1,  // i32 rank, i32 world, str host
  kSet = 2,    // str key, str value
  kGet = 3,    // str key, i64 timeout_ms
  kWait = 4,   // u32 n, n × str key, i64 timeout_ms
  kAdd = 5,    // str key, i64 delta
  kCheck = 6,  // u32 n, n × str key
  kDel = 7,    // str key
  kPing = 8,   // (nothing)
  kBye = 9,    // (nothing): a clean leave, not a death
  // server → client
  kReply = 64,    // u8 code, str message, str value
  kPong = 65,     // u32 n, n × (i32 rank, str reason): the ranks known dead
  kDead = 66,     // i32 rank, str reason (pushed when the server notices)
  kClosing = 67,  // (nothing): rank 0 closes the rendezvous cleanly
  kReject = 68,   // str message (sent once, then the connection is closed)
};

class Writer {
 public:
  Writer(Msg type, uint64_t id);
  Writer& u8(uint8_t v);
  Writer& u32(uint32_t v);
  Writer& i64(int64_t v);
  Writer& str(std::string_view s);
  const std::string& body() const { return b_; }

 private:
  std::string b_;
};

class Reader {
 public:
  explicit Reader(std::string_view body) : s_(body) {}
  bool u8(uint8_t* v);
  bool u32(uint32_t* v);
  bool i32(int32_t* v);
  bool i64(int64_t* v);
  bool str(std::string* v);
  bool done() const { return s_.empty(); }

 private:
  std::string_view s_;
};

// Header of a body: type and request id. false if the body is too short.
bool parse_header(Reader& r, Msg* type, uint64_t* id);

// length ‖ mac ‖ body.
std::string seal(std::string_view key, const std::string& body);

enum class Take { kNeedMore, kFrame, kBadMac, kGarbage };
// Pops one frame from the front of `buf` into `body` (MAC checked).
Take take_frame(std::string& buf, std::string_view key, std::string* body);

// ---- sockets (non-blocking fds; every wait is bounded) ----------------------

// Ignores SIGPIPE process-wide: a peer that died must surface as EPIPE from a
// write, not kill this process (gloo writes with writev, which raises it).
void ignore_sigpipe();

// Listens on every interface at `port` (0 = an ephemeral one) with
// SO_REUSEADDR, IPv6 dual-stack when available. Returns the fd; *bound gets the
// real port.
Expected<int> tcp_listen(int port, int* bound);
// Connects to host:port, trying every address getaddrinfo returns, until `d`.
Expected<int> tcp_connect(const std::string& host, int port, const Deadline& d);
// Writes all of `data` before `d` (EAGAIN waits on poll).
Status write_all(int fd, std::string_view data, const Deadline& d);
// Reads what is available (after waiting up to timeout_ms for readability).
// Returns bytes read (0 = nothing yet), or an error (kAborted on EOF).
Expected<size_t> read_some(int fd, std::string& buf, int timeout_ms);
void set_nonblocking(int fd);
// The local / peer address of a connected socket as "ip" / "ip:port".
std::string local_ip(int fd);
std::string peer_str(int fd);

}  // namespace shardlm::rdzv
