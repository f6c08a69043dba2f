// The private directory: a run killed outright leaves its directory, the next run removes
// it, and nothing else (a live run's, another program's, a symlink) is touched.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <string>

#include "tunnel/control_dir.hpp"

namespace tprosshy::tunnel {
namespace {

namespace fs = std::filesystem;

class control_dir_test : public testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = fs::temp_directory_path().string() + "/tpcd.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    base_ = tmpl;
    if (const char* t = std::getenv("TMPDIR")) old_ = t;
    ::setenv("TMPDIR", base_.c_str(), 1);
  }
  void TearDown() override {
    if (old_)
      ::setenv("TMPDIR", old_->c_str(), 1);
    else
      ::unsetenv("TMPDIR");
    fs::remove_all(base_);
  }

  std::set<std::string> entries() const {
    std::set<std::string> out;
    for (const auto& e : fs::directory_iterator(base_)) out.insert(e.path().filename().string());
    return out;
  }

  // A run that dies without its destructors, as SIGKILL ends one: its directory stays.
  std::string killed_run() {
    const auto before = entries();
    pid_t pid = ::fork();
    if (pid == 0) {
      control_dir d;
      std::ofstream(d.file("known_hosts")) << "x\n";
      ::_exit(0);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    for (const auto& e : entries())
      if (!before.contains(e)) return e;
    return "";
  }

  std::string base_;
  std::optional<std::string> old_;
};

TEST_F(control_dir_test, a_killed_runs_directory_goes_with_the_next_run) {
  const auto dead = killed_run();
  ASSERT_FALSE(dead.empty());
  EXPECT_TRUE(fs::exists(base_ + "/" + dead + "/lock"));
  control_dir next;
  EXPECT_FALSE(fs::exists(base_ + "/" + dead));
  EXPECT_EQ(entries(), std::set<std::string>{fs::path(next.path()).filename().string()});
}

TEST_F(control_dir_test, a_live_runs_directory_and_other_things_stay) {
  control_dir live;
  fs::create_directory(base_ + "/tprosshy.nolock");  // no lock: not ours to judge
  fs::create_directory(base_ + "/elsewhere");
  std::ofstream(base_ + "/elsewhere/lock") << "";
  fs::create_directory_symlink(base_ + "/elsewhere", base_ + "/tprosshy.linked");
  fs::create_directory(base_ + "/tprosshy.toolongname");
  std::ofstream(base_ + "/tprosshy.toolongname/lock") << "";
  const auto before = entries();
  { control_dir next; }
  EXPECT_EQ(entries(), before);
  EXPECT_TRUE(fs::exists(live.path() + "/lock"));
}

TEST_F(control_dir_test, a_clean_end_leaves_nothing) {
  {
    control_dir d;
    EXPECT_EQ((fs::status(d.path()).permissions() & fs::perms::all), fs::perms::owner_all);
  }
  EXPECT_TRUE(entries().empty());
}

}  // namespace
}  // namespace tprosshy::tunnel
