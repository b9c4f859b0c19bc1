#include "comm/hmac.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <random>

namespace shardlm {
namespace {

std::string to_hex(const uint8_t* p, size_t n) {
  static const char* kDigits = "0123456789abcdef";
  std::string s(2 * n, '0');
  for (size_t i = 0; i < n; ++i) {
    s[2 * i] = kDigits[p[i] >> 4];
    s[2 * i + 1] = kDigits[p[i] & 15];
  }
  return s;
}

}  // namespace

Mac hmac_sha256(std::string_view key, std::string_view a, std::string_view b) {
  Mac mac{};
  // EVP_MAC would be the OpenSSL 3 spelling; HMAC_CTX is deprecated there, so
  // the one-shot HMAC() is used on the concatenation when `b` is present.
  unsigned int len = 0;
  if (b.empty()) {
    HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
         reinterpret_cast<const unsigned char*>(a.data()), a.size(), mac.data(), &len);
  } else {
    std::string joined;
    joined.reserve(a.size() + b.size());
    joined.append(a).append(b);
    HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
         reinterpret_cast<const unsigned char*>(joined.data()), joined.size(), mac.data(), &len);
  }
  return mac;
}

bool hmac_verify(std::string_view key, const void* got, std::string_view a, std::string_view b) {
  Mac want = hmac_sha256(key, a, b);
  return CRYPTO_memcmp(want.data(), got, kMacSize) == 0;
}

std::string sha256_hex(std::string_view data) {
  uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  return to_hex(digest, sizeof(digest));
}

std::string random_hex(size_t bytes) {
  std::string raw(bytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), static_cast<int>(bytes)) != 1) {
    // The OS CSPRNG failing is near impossible; fall back to random_device.
    std::random_device rd;
    for (auto& c : raw) c = static_cast<char>(rd());
  }
  return to_hex(reinterpret_cast<const uint8_t*>(raw.data()), raw.size());
}

}  // namespace shardlm
