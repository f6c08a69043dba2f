#include "tunnel/account.hpp"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <string_view>

extern char** environ;

namespace tprosshy::tunnel {

namespace {

std::optional<account> from(const passwd& pw) {
  account a{
      pw.pw_uid, pw.pw_gid, pw.pw_name, pw.pw_dir ? pw.pw_dir : "", pw.pw_shell ? pw.pw_shell : "",
      {}};
  int n = 32;
  for (int tries = 0; tries < 4; ++tries) {
    a.groups.resize(static_cast<std::size_t>(n));
    const int asked = n;
    if (::getgrouplist(pw.pw_name, pw.pw_gid, a.groups.data(), &n) >= 0) {
      a.groups.resize(static_cast<std::size_t>(n));
      return a;
    }
    if (n <= asked) n = asked * 4;
  }
  a.groups = {pw.pw_gid};
  return a;
}

}  // namespace

std::optional<account> account_by_uid(uid_t uid) {
  std::vector<char> buf(16384);
  passwd pw{}, *found = nullptr;
  if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) != 0 || !found) return std::nullopt;
  return from(pw);
}

std::optional<account> account_by_name(const std::string& name) {
  std::vector<char> buf(16384);
  passwd pw{}, *found = nullptr;
  if (::getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found) != 0 || !found)
    return std::nullopt;
  return from(pw);
}

std::vector<std::string> environment_for(const account& a) {
  std::vector<std::string> env{"HOME=" + a.home, "USER=" + a.name, "LOGNAME=" + a.name};
  if (!a.shell.empty()) env.push_back("SHELL=" + a.shell);
  for (char** e = environ; e && *e; ++e) {
    const std::string_view kv(*e);
    const auto key = kv.substr(0, kv.find('='));
    if (key == "HOME" || key == "USER" || key == "LOGNAME" || key == "SHELL" ||
        key == "SSH_AUTH_SOCK" || key == "XDG_RUNTIME_DIR")
      continue;
    env.emplace_back(kv);
  }
  return env;
}

}  // namespace tprosshy::tunnel
