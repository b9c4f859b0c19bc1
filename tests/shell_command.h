// Runs a shell command line for the end-to-end tests that drive the shardlm
// binary: its stdout, and its exit status (-1 when it did not exit normally).
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace shardlm::testing {

struct ShellResult {
  int exit_code = -1;
  std::string out;  // stdout (redirect stderr in the command line to keep it)
};

inline ShellResult run_shell(const std::string& command) {
  ShellResult r;
  FILE* p = popen(command.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int st = pclose(p);
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

}  // namespace shardlm::testing
