#include "comm/launch_env.h"

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <map>

#include "comm/hmac.h"

namespace shardlm {
namespace {

using L = LaunchInfo::Launcher;

// Unset → nullopt; set but not an integer (or out of int range) → error naming it.
Expected<std::optional<int>> get_int(const GetenvFn& env, const char* name) {
  auto v = env(name);
  if (!v) return std::optional<int>();
  const std::string& s = *v;
  char* end = nullptr;
  errno = 0;
  long long x = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || errno != 0 || x < INT_MIN || x > INT_MAX)
    return make_error(ErrorCode::kInvalidArgument, "environment variable {}='{}' is not an integer",
                      name, s);
  return std::optional<int>(static_cast<int>(x));
}

std::optional<std::string> get_nonempty(const GetenvFn& env, const char* name) {
  auto v = env(name);
  if (v && v->empty()) return std::nullopt;
  return v;
}

// Reads a (rank, world) pair; both or neither must be set.
struct RankWorld {
  bool present = false;
  int rank = 0;
  int world = 1;
};
Expected<RankWorld> get_rank_world(const GetenvFn& env, const char* rank_var, const char* world_var,
                                   const char* alt_world_var = nullptr) {
  SHARDLM_ASSIGN_OR_RETURN(auto r, get_int(env, rank_var));
  SHARDLM_ASSIGN_OR_RETURN(auto w, get_int(env, world_var));
  if (!w && alt_world_var) {
    SHARDLM_ASSIGN_OR_RETURN(w, get_int(env, alt_world_var));
  }
  RankWorld rw;
  if (!r && !w) return rw;
  if (!r || !w)
    return make_error(ErrorCode::kInvalidArgument,
                      "{} is set but {} is not: the launcher must set both (or unset the stray one)",
                      r ? rank_var : world_var, r ? world_var : rank_var);
  if (*w < 1)
    return make_error(ErrorCode::kInvalidArgument, "{}={} must be ≥ 1", world_var, *w);
  if (*r < 0 || *r >= *w)
    return make_error(ErrorCode::kInvalidArgument, "{}={} is outside [0, {}={})", rank_var, *r,
                      world_var, *w);
  rw.present = true;
  rw.rank = *r;
  rw.world = *w;
  return rw;
}

// explicit > first of `vars` that is set > fallback.
Expected<int> pick_local_rank(const GetenvFn& env, std::optional<int> explicit_local_rank,
                              std::initializer_list<const char*> vars, int fallback) {
  if (explicit_local_rank) {
    if (*explicit_local_rank < 0)
      return make_error(ErrorCode::kInvalidArgument, "--local-rank {} must be ≥ 0", *explicit_local_rank);
    return *explicit_local_rank;
  }
  for (const char* v : vars) {
    SHARDLM_ASSIGN_OR_RETURN(auto x, get_int(env, v));
    if (x) {
      if (*x < 0) return make_error(ErrorCode::kInvalidArgument, "{}={} must be ≥ 0", v, *x);
      return *x;
    }
  }
  return fallback;
}

Expected<int> get_port(const GetenvFn& env, const char* var, int fallback) {
  SHARDLM_ASSIGN_OR_RETURN(auto p, get_int(env, var));
  if (!p) return fallback;
  if (*p < 1 || *p > 65535)
    return make_error(ErrorCode::kInvalidArgument, "{}={} is not a TCP port (1..65535)", var, *p);
  return *p;
}

Expected<LaunchInfo> single_process(const GetenvFn& env, std::optional<int> explicit_local_rank,
                                    const std::string& job_key) {
  LaunchInfo info;
  info.launcher = L::kNone;
  info.job_key = job_key;
  SHARDLM_ASSIGN_OR_RETURN(info.local_rank, pick_local_rank(env, explicit_local_rank, {"LOCAL_RANK"}, 0));
  return info;
}

// MPI launchers: MASTER_ADDR, else loopback when every rank is on this node.
Expected<std::string> mpi_master(const GetenvFn& env, const char* local_size_var, int world,
                                 const char* how_to_pass) {
  if (auto m = get_nonempty(env, "MASTER_ADDR")) return *m;
  SHARDLM_ASSIGN_OR_RETURN(auto local_size, get_int(env, local_size_var));
  if (local_size && *local_size == world) return std::string("127.0.0.1");
  return make_error(ErrorCode::kInvalidArgument,
                    "MPI launch across nodes (world {}, {} {}) but MASTER_ADDR is unset: pass the "
                    "rank-0 host, e.g. {}",
                    world, local_size_var, local_size ? std::to_string(*local_size) : "unset", how_to_pass);
}

}  // namespace

const char* launcher_name(LaunchInfo::Launcher l) {
  switch (l) {
    case L::kNone: return "single process";
    case L::kTorchrun: return "torchrun";
    case L::kSlurm: return "slurm";
    case L::kOpenMPI: return "openmpi";
    case L::kPMI: return "pmi";
    case L::kSelfSpawn: return "self-spawn";
  }
  return "?";
}

std::string LaunchInfo::describe() const {
  if (launcher == L::kNone) return fmt::format("single process (local rank {})", local_rank);
  return fmt::format("{}: rank {} of {}, local rank {}, master {}:{}", launcher_name(launcher), rank,
                     world, local_rank, master_addr, master_port);
}

Expected<LaunchInfo> detect_launch(const GetenvFn& env, std::optional<int> explicit_local_rank) {
  std::string job_key = env("SHARDLM_JOB_KEY").value_or("");
  LaunchInfo info;
  info.job_key = job_key;

  // 1. shardlm's own children.
  SHARDLM_ASSIGN_OR_RETURN(auto self, get_rank_world(env, "SHARDLM_RANK", "SHARDLM_WORLD_SIZE"));
  if (self.present) {
    if (self.world == 1) return single_process(env, explicit_local_rank, job_key);
    info.launcher = L::kSelfSpawn;
    info.rank = self.rank;
    info.world = self.world;
    SHARDLM_ASSIGN_OR_RETURN(info.local_rank,
                             pick_local_rank(env, explicit_local_rank, {"SHARDLM_LOCAL_RANK"}, self.rank));
    info.master_addr = get_nonempty(env, "SHARDLM_MASTER_ADDR").value_or("127.0.0.1");
    SHARDLM_ASSIGN_OR_RETURN(info.master_port, get_port(env, "SHARDLM_MASTER_PORT", 0));
    if (info.master_port == 0)
      return make_error(ErrorCode::kInvalidArgument,
                        "self-spawned rank {} has no SHARDLM_MASTER_PORT: the parent must pass the "
                        "port its rendezvous bound",
                        self.rank);
    return info;
  }

  // 2. torchrun.
  SHARDLM_ASSIGN_OR_RETURN(auto tr, get_rank_world(env, "RANK", "WORLD_SIZE"));
  if (tr.present) {
    if (tr.world == 1) return single_process(env, explicit_local_rank, job_key);
    info.launcher = L::kTorchrun;
    info.rank = tr.rank;
    info.world = tr.world;
    SHARDLM_ASSIGN_OR_RETURN(info.local_rank, pick_local_rank(env, explicit_local_rank, {"LOCAL_RANK"}, tr.rank));
    auto master = get_nonempty(env, "MASTER_ADDR");
    if (!master)
      return make_error(ErrorCode::kInvalidArgument,
                        "torchrun-style launch (RANK/WORLD_SIZE set, rank {} of {}) but MASTER_ADDR is "
                        "unset: export MASTER_ADDR=<rank-0 host> (torchrun sets it; with a custom "
                        "launcher pass it explicitly, and MASTER_PORT if not 29500)",
                        tr.rank, tr.world);
    info.master_addr = *master;
    SHARDLM_ASSIGN_OR_RETURN(info.master_port, get_port(env, "MASTER_PORT", 29500));
    return info;
  }

  // 3. OpenMPI.
  SHARDLM_ASSIGN_OR_RETURN(auto om, get_rank_world(env, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"));
  if (om.present) {
    if (om.world == 1) return single_process(env, explicit_local_rank, job_key);
    info.launcher = L::kOpenMPI;
    info.rank = om.rank;
    info.world = om.world;
    SHARDLM_ASSIGN_OR_RETURN(info.local_rank, pick_local_rank(env, explicit_local_rank,
                                                              {"OMPI_COMM_WORLD_LOCAL_RANK"}, om.rank));
    SHARDLM_ASSIGN_OR_RETURN(info.master_addr,
                             mpi_master(env, "OMPI_COMM_WORLD_LOCAL_SIZE", om.world,
                                        "`mpirun -x MASTER_ADDR=<rank-0 host> -x MASTER_PORT=<port> ...`"));
    SHARDLM_ASSIGN_OR_RETURN(info.master_port, get_port(env, "MASTER_PORT", 29500));
    return info;
  }

  // 4. PMI (MPICH / Intel MPI).
  SHARDLM_ASSIGN_OR_RETURN(auto pmi, get_rank_world(env, "PMI_RANK", "PMI_SIZE"));
  if (pmi.present) {
    if (pmi.world == 1) return single_process(env, explicit_local_rank, job_key);
    info.launcher = L::kPMI;
    info.rank = pmi.rank;
    info.world = pmi.world;
    SHARDLM_ASSIGN_OR_RETURN(info.local_rank,
                             pick_local_rank(env, explicit_local_rank, {"MPI_LOCALRANKID", "PMI_LOCAL_RANK"}, pmi.rank));
    SHARDLM_ASSIGN_OR_RETURN(info.master_addr,
                             mpi_master(env, "MPI_LOCALNRANKS", pmi.world,
                                        "`mpiexec -genv MASTER_ADDR <rank-0 host> -genv MASTER_PORT <port> ...`"));
    SHARDLM_ASSIGN_OR_RETURN(info.master_port, get_port(env, "MASTER_PORT", 29500));
    return info;
  }

  // 5. SLURM.
  SHARDLM_ASSIGN_OR_RETURN(auto sl, get_rank_world(env, "SLURM_PROCID", "SLURM_NTASKS", "SLURM_NPROCS"));
  if (sl.present) {
    if (sl.world == 1) return single_process(env, explicit_local_rank, job_key);
    info.launcher = L::kSlurm;
    info.rank = sl.rank;
    info.world = sl.world;
    SHARDLM_ASSIGN_OR_RETURN(info.local_rank, pick_local_rank(env, explicit_local_rank, {"SLURM_LOCALID"}, sl.rank));
    if (auto m = get_nonempty(env, "MASTER_ADDR")) {
      info.master_addr = *m;
    } else {
      const char* var = nullptr;
      std::optional<std::string> list;
      for (const char* v : {"SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST"}) {
        if ((list = get_nonempty(env, v))) {
          var = v;
          break;
        }
      }
      if (!list)
        return make_error(ErrorCode::kInvalidArgument,
                          "SLURM launch (rank {} of {}) but neither MASTER_ADDR nor SLURM_JOB_NODELIST is "
                          "set: export MASTER_ADDR=<rank-0 host> in the batch script",
                          sl.rank, sl.world);
      auto hosts = expand_slurm_nodelist(*list);
      if (!hosts.ok()) return hosts.status().with_context(var);
      info.master_addr = hosts->front();
    }
    SHARDLM_ASSIGN_OR_RETURN(auto job_id, get_int(env, "SLURM_JOB_ID"));
    int fallback = job_id ? 15000 + (*job_id % 10000 + 10000) % 10000 : 29500;
    SHARDLM_ASSIGN_OR_RETURN(info.master_port, get_port(env, "MASTER_PORT", fallback));
    return info;
  }

  // 6. Nothing (or only stray variables): a single process.
  return single_process(env, explicit_local_rank, job_key);
}

// ---- SLURM host lists --------------------------------------------------------

namespace {

constexpr size_t kMaxHosts = 1 << 20;

// One bracket body "1,3-4,08-10" → the strings it stands for.
Expected<std::vector<std::string>> expand_ranges(const std::string& body, const std::string& list) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= body.size()) {
    size_t comma = body.find(',', pos);
    std::string item = body.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    pos = comma == std::string::npos ? body.size() + 1 : comma + 1;
    size_t dash = item.find('-');
    std::string lo = item.substr(0, dash), hi = dash == std::string::npos ? lo : item.substr(dash + 1);
    auto digits = [](const std::string& s) {
      return !s.empty() && s.size() <= 9 && s.find_first_not_of("0123456789") == std::string::npos;
    };
    if (!digits(lo) || !digits(hi))
      return make_error(ErrorCode::kInvalidArgument, "malformed range '{}' in host list '{}'", item, list);
    long a = std::stol(lo), b = std::stol(hi);
    if (b < a)
      return make_error(ErrorCode::kInvalidArgument, "descending range '{}' in host list '{}'", item, list);
    if (static_cast<size_t>(b - a) + out.size() >= kMaxHosts)
      return make_error(ErrorCode::kInvalidArgument, "host list '{}' expands to too many hosts", list);
    for (long x = a; x <= b; ++x) {
      std::string s = std::to_string(x);
      if (s.size() < lo.size()) s.insert(0, lo.size() - s.size(), '0');
      out.push_back(std::move(s));
    }
  }
  return out;
}

// One group "rack[1-2]-n[01-02]" → the cartesian product of its parts.
Expected<std::vector<std::string>> expand_group(const std::string& g, const std::string& list) {
  std::vector<std::string> acc{""};
  size_t i = 0;
  while (i < g.size()) {
    if (g[i] == '[') {
      size_t close = g.find(']', i);
      if (close == std::string::npos)
        return make_error(ErrorCode::kInvalidArgument, "unbalanced '[' in host list '{}'", list);
      SHARDLM_ASSIGN_OR_RETURN(auto parts, expand_ranges(g.substr(i + 1, close - i - 1), list));
      if (acc.size() * parts.size() > kMaxHosts)
        return make_error(ErrorCode::kInvalidArgument, "host list '{}' expands to too many hosts", list);
      std::vector<std::string> next;
      next.reserve(acc.size() * parts.size());
      for (const auto& a : acc)
        for (const auto& p : parts) next.push_back(a + p);
      acc = std::move(next);
      i = close + 1;
    } else if (g[i] == ']') {
      return make_error(ErrorCode::kInvalidArgument, "unbalanced ']' in host list '{}'", list);
    } else {
      size_t next = g.find('[', i);
      std::string lit = g.substr(i, next == std::string::npos ? std::string::npos : next - i);
      if (lit.find(']') != std::string::npos)
        return make_error(ErrorCode::kInvalidArgument, "unbalanced ']' in host list '{}'", list);
      for (auto& a : acc) a += lit;
      i = next == std::string::npos ? g.size() : next;
    }
  }
  return acc;
}

}  // namespace

Expected<std::vector<std::string>> expand_slurm_nodelist(const std::string& list) {
  std::vector<std::string> hosts;
  std::string group;
  int depth = 0;
  auto flush = [&]() -> Status {
    if (group.empty())
      return make_error(ErrorCode::kInvalidArgument, "empty host name in host list '{}'", list);
    SHARDLM_ASSIGN_OR_RETURN(auto g, expand_group(group, list));
    if (hosts.size() + g.size() > kMaxHosts)
      return make_error(ErrorCode::kInvalidArgument, "host list '{}' expands to too many hosts", list);
    hosts.insert(hosts.end(), g.begin(), g.end());
    group.clear();
    return Status::Ok();
  };
  for (char c : list) {
    if (c == '[') ++depth;
    if (c == ']') --depth;
    if (depth < 0 || depth > 1)
      return make_error(ErrorCode::kInvalidArgument, "unbalanced brackets in host list '{}'", list);
    if (c == ',' && depth == 0) {
      SHARDLM_TRY(flush());
    } else if (c != ' ') {
      group += c;
    }
  }
  if (depth != 0) return make_error(ErrorCode::kInvalidArgument, "unbalanced '[' in host list '{}'", list);
  SHARDLM_TRY(flush());
  return hosts;
}

// ---- devices and job key -----------------------------------------------------

Expected<int> pick_device(const LaunchInfo& info, int visible_device_count) {
  if (visible_device_count <= 0)
    return make_error(ErrorCode::kNotFound,
                      "rank {} (local rank {}) sees no device: check CUDA_VISIBLE_DEVICES and the "
                      "launcher's GPU binding, or run the CPU backend",
                      info.rank, info.local_rank);
  return info.local_rank % visible_device_count;
}

Status check_device_assignment(const std::vector<std::pair<std::string, int>>& host_device_by_rank) {
  std::map<std::pair<std::string, int>, int> first;
  std::map<std::string, int> ranks_on_host;
  for (const auto& [host, dev] : host_device_by_rank)
    if (dev >= 0) ++ranks_on_host[host];
  for (size_t r = 0; r < host_device_by_rank.size(); ++r) {
    const auto& key = host_device_by_rank[r];
    if (key.second < 0) continue;
    auto [it, inserted] = first.emplace(key, static_cast<int>(r));
    if (!inserted)
      return make_error(ErrorCode::kInvalidArgument,
                        "ranks {} and {} both use device {} on host {} ({} ranks on that host): start at "
                        "most one rank per visible GPU on each host (check --ntasks-per-node / -npernode "
                        "/ --nproc-per-node, CUDA_VISIBLE_DEVICES, and --local-rank)",
                        it->second, r, key.second, key.first, ranks_on_host[key.first]);
  }
  return Status::Ok();
}

std::string resolve_job_key(const LaunchInfo& info, const std::optional<std::string>& explicit_key) {
  if (explicit_key && !explicit_key->empty()) return *explicit_key;
  if (!info.job_key.empty()) return info.job_key;
  return sha256_hex(fmt::format("shardlm-job-key-v1|{}|{}|{}", info.master_addr, info.master_port, info.world));
}

}  // namespace shardlm
