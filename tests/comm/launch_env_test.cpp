// Launch detection: one test per rule of DESIGN §1 (fake environments).
#include "comm/launch_env.h"

#include <gtest/gtest.h>

#include <map>

namespace shardlm {
namespace {

using Env = std::map<std::string, std::string>;
using L = LaunchInfo::Launcher;

GetenvFn fake(const Env& env) {
  return [env](const char* name) -> std::optional<std::string> {
    auto it = env.find(name);
    if (it == env.end()) return std::nullopt;
    return it->second;
  };
}

LaunchInfo detect_ok(const Env& env, std::optional<int> local = std::nullopt) {
  auto r = detect_launch(fake(env), local);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return r.ok() ? *r : LaunchInfo{};
}

std::string detect_err(const Env& env, std::optional<int> local = std::nullopt) {
  auto r = detect_launch(fake(env), local);
  EXPECT_FALSE(r.ok());
  return r.ok() ? "" : r.status().message();
}

TEST(LaunchEnv, NoLauncherIsSingleProcess) {
  auto i = detect_ok({});
  EXPECT_EQ(i.launcher, L::kNone);
  EXPECT_EQ(i.world, 1);
  EXPECT_EQ(i.rank, 0);
  EXPECT_EQ(i.local_rank, 0);
  EXPECT_FALSE(i.distributed());
}

TEST(LaunchEnv, TorchrunMultiRank) {
  auto i = detect_ok({{"RANK", "3"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"}, {"MASTER_ADDR", "10.0.0.7"},
                      {"MASTER_PORT", "1234"}});
  EXPECT_EQ(i.launcher, L::kTorchrun);
  EXPECT_EQ(i.rank, 3);
  EXPECT_EQ(i.world, 4);
  EXPECT_EQ(i.local_rank, 1);
  EXPECT_EQ(i.master_addr, "10.0.0.7");
  EXPECT_EQ(i.master_port, 1234);
  EXPECT_NE(i.describe().find("torchrun: rank 3 of 4"), std::string::npos) << i.describe();
}

TEST(LaunchEnv, TorchrunWorldOneIsSingle) {
  auto i = detect_ok({{"RANK", "0"}, {"WORLD_SIZE", "1"}, {"LOCAL_RANK", "0"}});
  EXPECT_EQ(i.launcher, L::kNone);
  EXPECT_EQ(i.world, 1);
}

TEST(LaunchEnv, TorchrunDefaultsLocalRankAndPort) {
  auto i = detect_ok({{"RANK", "2"}, {"WORLD_SIZE", "4"}, {"MASTER_ADDR", "node0"}});
  EXPECT_EQ(i.local_rank, 2);  // LOCAL_RANK unset → rank
  EXPECT_EQ(i.master_port, 29500);
}

TEST(LaunchEnv, TorchrunWithoutMasterAddrNamesTheFix) {
  std::string e = detect_err({{"RANK", "1"}, {"WORLD_SIZE", "2"}});
  EXPECT_NE(e.find("MASTER_ADDR is unset"), std::string::npos) << e;
  EXPECT_NE(e.find("export MASTER_ADDR="), std::string::npos) << e;
}

TEST(LaunchEnv, MalformedIntegersNameTheVariable) {
  EXPECT_NE(detect_err({{"RANK", "one"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}}).find("RANK='one'"),
            std::string::npos);
  EXPECT_NE(detect_err({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "80x"}})
                .find("MASTER_PORT"),
            std::string::npos);
  EXPECT_NE(detect_err({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "70000"}})
                .find("MASTER_PORT"),
            std::string::npos);
  EXPECT_NE(detect_err({{"RANK", "4"}, {"WORLD_SIZE", "4"}, {"MASTER_ADDR", "h"}}).find("outside"),
            std::string::npos);
  EXPECT_NE(detect_err({{"RANK", "1"}}).find("WORLD_SIZE"), std::string::npos);
  EXPECT_NE(detect_err({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"SLURM_LOCALID", "x"}}).find("SLURM_LOCALID"),
            std::string::npos);
}

TEST(LaunchEnv, SlurmMultiTask) {
  auto i = detect_ok({{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "1"},
                      {"SLURM_JOB_NODELIST", "gpu[03-04]"}, {"SLURM_JOB_ID", "123456"}});
  EXPECT_EQ(i.launcher, L::kSlurm);
  EXPECT_EQ(i.rank, 5);
  EXPECT_EQ(i.world, 8);
  EXPECT_EQ(i.local_rank, 1);
  EXPECT_EQ(i.master_addr, "gpu03");
  EXPECT_EQ(i.master_port, 15000 + 3456);  // derived from the job id when MASTER_PORT is unset
  auto j = detect_ok({{"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "2"}, {"SLURM_NODELIST", "n7"},
                      {"MASTER_ADDR", "10.1.1.1"}, {"MASTER_PORT", "4000"}});
  EXPECT_EQ(j.master_addr, "10.1.1.1");  // MASTER_ADDR beats the node list
  EXPECT_EQ(j.master_port, 4000);
  EXPECT_EQ(j.local_rank, 1);  // SLURM_LOCALID unset → rank
  auto single = detect_ok({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}, {"SLURM_JOB_NODELIST", "n1"}});
  EXPECT_EQ(single.launcher, L::kNone);
  EXPECT_NE(detect_err({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}}).find("MASTER_ADDR"), std::string::npos);
}

TEST(LaunchEnv, SlurmNodelistForms) {
  auto first = [](const std::string& list) {
    auto i = detect_ok({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"SLURM_JOB_NODELIST", list}});
    return i.master_addr;
  };
  EXPECT_EQ(first("n1"), "n1");
  EXPECT_EQ(first("n[01-03]"), "n01");
  EXPECT_EQ(first("a[1,3-4],b7"), "a1");

  using V = std::vector<std::string>;
  EXPECT_EQ(*expand_slurm_nodelist("n1"), V({"n1"}));
  EXPECT_EQ(*expand_slurm_nodelist("n[01-03]"), V({"n01", "n02", "n03"}));
  EXPECT_EQ(*expand_slurm_nodelist("a[1,3-4],b7"), V({"a1", "a3", "a4", "b7"}));
  EXPECT_EQ(*expand_slurm_nodelist("node[01-02,07],login"), V({"node01", "node02", "node07", "login"}));
  EXPECT_EQ(*expand_slurm_nodelist("n[08-10]"), V({"n08", "n09", "n10"}));
  EXPECT_EQ(*expand_slurm_nodelist("r[1-2]-n[1-2]"), V({"r1-n1", "r1-n2", "r2-n1", "r2-n2"}));
  for (const char* bad : {"n[1-", "n]1", "n[3-1]", "n[a-b]", "", "a,,b", "n[1-2]]"})
    EXPECT_FALSE(expand_slurm_nodelist(bad).ok()) << bad;
}

TEST(LaunchEnv, OpenMPI) {
  auto i = detect_ok({{"OMPI_COMM_WORLD_RANK", "2"}, {"OMPI_COMM_WORLD_SIZE", "4"},
                      {"OMPI_COMM_WORLD_LOCAL_RANK", "0"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"},
                      {"MASTER_ADDR", "host0"}});
  EXPECT_EQ(i.launcher, L::kOpenMPI);
  EXPECT_EQ(i.rank, 2);
  EXPECT_EQ(i.world, 4);
  EXPECT_EQ(i.local_rank, 0);
  EXPECT_EQ(i.master_addr, "host0");
  EXPECT_EQ(i.master_port, 29500);
  // Single-node mpirun: every rank local → loopback without MASTER_ADDR.
  auto local = detect_ok({{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"},
                          {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}});
  EXPECT_EQ(local.master_addr, "127.0.0.1");
  // Across nodes without MASTER_ADDR: an error naming mpirun -x.
  std::string e = detect_err({{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "4"},
                              {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}});
  EXPECT_NE(e.find("mpirun -x MASTER_ADDR"), std::string::npos) << e;
}

TEST(LaunchEnv, PMI) {
  auto i = detect_ok({{"PMI_RANK", "3"}, {"PMI_SIZE", "4"}, {"MPI_LOCALRANKID", "1"}, {"MASTER_ADDR", "m"}});
  EXPECT_EQ(i.launcher, L::kPMI);
  EXPECT_EQ(i.rank, 3);
  EXPECT_EQ(i.world, 4);
  EXPECT_EQ(i.local_rank, 1);
  auto j = detect_ok({{"PMI_RANK", "1"}, {"PMI_SIZE", "2"}, {"MPI_LOCALNRANKS", "2"}});
  EXPECT_EQ(j.local_rank, 1);
  EXPECT_EQ(j.master_addr, "127.0.0.1");
  EXPECT_FALSE(detect_launch(fake({{"PMI_RANK", "1"}, {"PMI_SIZE", "2"}}), std::nullopt).ok());
}

TEST(LaunchEnv, ExplicitLocalRankBeatsStaleLocalRank) {
  auto i = detect_ok({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "7"}, {"MASTER_ADDR", "h"}}, 1);
  EXPECT_EQ(i.local_rank, 1);
  auto single = detect_ok({{"LOCAL_RANK", "5"}}, 0);
  EXPECT_EQ(single.local_rank, 0);
  EXPECT_EQ(detect_ok({{"LOCAL_RANK", "5"}}).local_rank, 5);
  EXPECT_FALSE(detect_launch(fake({}), -1).ok());
}

TEST(LaunchEnv, SelfSpawnVariablesTakePriority) {
  auto i = detect_ok({{"SHARDLM_RANK", "2"}, {"SHARDLM_WORLD_SIZE", "4"}, {"SHARDLM_LOCAL_RANK", "2"},
                      {"SHARDLM_MASTER_PORT", "41000"}, {"SHARDLM_JOB_KEY", "k123"},
                      // A stale torchrun environment around the parent must not win.
                      {"RANK", "0"}, {"WORLD_SIZE", "8"}, {"MASTER_ADDR", "elsewhere"}});
  EXPECT_EQ(i.launcher, L::kSelfSpawn);
  EXPECT_EQ(i.rank, 2);
  EXPECT_EQ(i.world, 4);
  EXPECT_EQ(i.master_addr, "127.0.0.1");
  EXPECT_EQ(i.master_port, 41000);
  EXPECT_EQ(i.job_key, "k123");
  EXPECT_NE(detect_err({{"SHARDLM_RANK", "1"}, {"SHARDLM_WORLD_SIZE", "2"}}).find("SHARDLM_MASTER_PORT"),
            std::string::npos);
}

TEST(LaunchEnv, PrecedenceOfMoreSpecificLaunchers) {
  // mpirun inside an sbatch script: the batch step's SLURM_PROCID is the same on every rank.
  auto i = detect_ok({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "4"}, {"SLURM_JOB_NODELIST", "n1"},
                      {"OMPI_COMM_WORLD_RANK", "3"}, {"OMPI_COMM_WORLD_SIZE", "4"},
                      {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"}});
  EXPECT_EQ(i.launcher, L::kOpenMPI);
  EXPECT_EQ(i.rank, 3);
}

TEST(LaunchEnv, DeviceMappingModuloVisibleDevices) {
  LaunchInfo i;
  i.local_rank = 5;
  EXPECT_EQ(*pick_device(i, 8), 5);
  EXPECT_EQ(*pick_device(i, 4), 1);
  EXPECT_EQ(*pick_device(i, 1), 0);
  EXPECT_FALSE(pick_device(i, 0).ok());
}

TEST(LaunchEnv, DuplicateDeviceAssignmentIsAnError) {
  EXPECT_TRUE(check_device_assignment({{"a", 0}, {"a", 1}, {"b", 0}, {"b", 1}}).ok());
  EXPECT_TRUE(check_device_assignment({{"a", -1}, {"a", -1}}).ok());  // CPU ranks
  Status st = check_device_assignment({{"a", 0}, {"a", 1}, {"a", 0}});
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("ranks 0 and 2 both use device 0 on host a"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("one rank per visible GPU"), std::string::npos) << st.message();
}

TEST(LaunchEnv, JobKeyResolution) {
  LaunchInfo a;
  a.launcher = L::kTorchrun;
  a.world = 4;
  a.master_addr = "10.0.0.1";
  a.master_port = 29500;
  LaunchInfo b = a;
  b.rank = 3;
  EXPECT_EQ(resolve_job_key(a, std::nullopt), resolve_job_key(b, std::nullopt));  // every rank agrees
  LaunchInfo c = a;
  c.master_port = 29501;
  EXPECT_NE(resolve_job_key(a, std::nullopt), resolve_job_key(c, std::nullopt));
  a.job_key = "from-env";
  EXPECT_EQ(resolve_job_key(a, std::nullopt), "from-env");
  EXPECT_EQ(resolve_job_key(a, std::string("flag")), "flag");
}

}  // namespace
}  // namespace shardlm
