// unsafe_file: what a root tprosshy refuses to read, as sshd's StrictModes (issue 16).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "config/config.hpp"

namespace {

namespace fs = std::filesystem;
using tprosshy::config::unsafe_file;

class unsafe : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "tprosshy-unsafe.XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    ::chmod(dir_.c_str(), 0755);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path file(const std::string& name, mode_t mode, const fs::path& in = {}) {
    auto p = (in.empty() ? dir_ : in) / name;
    std::ofstream(p) << "profiles: {}\n";
    ::chmod(p.c_str(), mode);
    return p;
  }
  tprosshy::config::config of(const fs::path& main) {
    tprosshy::config::config c;
    c.file = main;
    c.files = {main};
    return c;
  }

  fs::path dir_;
};

TEST_F(unsafe, a_private_file_in_a_private_directory_is_read) {
  EXPECT_EQ(unsafe_file(of(file("ok.yaml", 0644))), std::nullopt);
  EXPECT_EQ(unsafe_file(of(file("private.yaml", 0600))), std::nullopt);
}

TEST_F(unsafe, a_file_its_group_or_others_may_write_is_refused_with_its_mode) {
  auto why = unsafe_file(of(file("group.yaml", 0664)));
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("group.yaml"), std::string::npos) << *why;
  EXPECT_NE(why->find("its group"), std::string::npos) << *why;
  EXPECT_NE(why->find("0664"), std::string::npos) << *why;
  why = unsafe_file(of(file("others.yaml", 0646)));
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("others"), std::string::npos) << *why;
}

TEST_F(unsafe, an_include_is_checked_like_the_file) {
  auto c = of(file("main.yaml", 0644));
  c.files.push_back(file("team.yaml", 0666));
  auto why = unsafe_file(c);
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("team.yaml"), std::string::npos) << *why;
}

TEST_F(unsafe, a_directory_others_may_write_is_refused_unless_roots_and_sticky) {
  fs::path open = dir_ / "open";
  fs::create_directory(open);
  ::chmod(open.c_str(), 0777);
  auto why = unsafe_file(of(file("in-open.yaml", 0644, open)));
  ASSERT_TRUE(why);
  EXPECT_NE(why->find(open.string() + " (owner"), std::string::npos) << *why;
  EXPECT_NE(why->find("0777"), std::string::npos) << *why;
  // Root's sticky directories (as /tmp) are fine: nobody else may replace the file there.
  ::chmod(open.c_str(), 01777);
  if (::geteuid() == 0)
    EXPECT_EQ(unsafe_file(of(fs::path(open) / "in-open.yaml")), std::nullopt);
  else
    EXPECT_TRUE(unsafe_file(of(fs::path(open) / "in-open.yaml")));  // sticky, but not root's
}

TEST_F(unsafe, files_that_ssh_args_name_with_dash_f_are_checked_too) {
  auto c = of(file("main.yaml", 0644));
  tprosshy::config::profile p;
  p.name = "corp";
  p.ssh_args = {"-i", (dir_ / "key").string(), "-F", file("ssh_config", 0666).string()};
  c.profiles.push_back(p);
  auto why = unsafe_file(c);
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("ssh_config"), std::string::npos) << *why;
  // Joined to its option, too; "none" is no file.
  c.profiles[0].ssh_args = {"-F" + file("joined", 0606).string()};
  ASSERT_TRUE(unsafe_file(c));
  c.profiles[0].ssh_args = {"-F", "none"};
  EXPECT_EQ(unsafe_file(c), std::nullopt);
}

TEST_F(unsafe, a_file_of_another_user_is_refused_naming_its_owner) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to give a file away";
  auto p = file("theirs.yaml", 0644);
  ASSERT_EQ(::chown(p.c_str(), 65534, 65534), 0);
  auto why = unsafe_file(of(p));
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("owned by"), std::string::npos) << *why;
}

}  // namespace
