// HMAC-SHA256 (OpenSSL) for the control plane: every rendezvous and control
// message carries a MAC over its body with the per-job key (DESIGN §1). The MAC
// gives integrity (a stray or mis-keyed process cannot inject messages); it does
// not encrypt anything.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace shardlm {

constexpr size_t kMacSize = 32;
using Mac = std::array<uint8_t, kMacSize>;

// HMAC-SHA256(key, a ‖ b). `b` lets callers bind a context (channel name) into the
// MAC without copying the body.
Mac hmac_sha256(std::string_view key, std::string_view a, std::string_view b = {});
// Constant-time comparison of a received MAC (`got`, kMacSize bytes) with the
// MAC of (a ‖ b).
bool hmac_verify(std::string_view key, const void* got, std::string_view a,
                 std::string_view b = {});
// SHA-256 of `data`, lower-case hex (64 characters).
std::string sha256_hex(std::string_view data);
// `bytes` random bytes from the OS CSPRNG, lower-case hex (self-spawn job keys).
std::string random_hex(size_t bytes);

}  // namespace shardlm
