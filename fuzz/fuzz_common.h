// Helpers shared by the libFuzzer targets.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

#define FUZZ_CHECK(cond)                                                        \
  do {                                                                          \
    if (!(cond)) {                                                              \
      std::fprintf(stderr, "FUZZ_CHECK failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
      std::abort();                                                             \
    }                                                                           \
  } while (0)

inline std::string fuzz_source_dir() {
  const char* s = std::getenv("SHARDLM_SOURCE_DIR");
  return s && *s ? s : SHARDLM_SOURCE_DIR;
}
