#include "tunnel/control_dir.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <vector>

namespace tprosshy::tunnel {

namespace {

// ssh binds "<ControlPath>.<16 random characters>" first, and a Unix socket path has at
// most sizeof(sun_path) - 1 bytes; leave room for a 40-character tunnel name (and, with an
// owner, the "/ssh" it goes in).
constexpr std::size_t room_for_names = 4 + 1 + 40 + 17;

std::string base_dir(bool for_others) {
  for (const char* var : {"RUNTIME_DIRECTORY", "TMPDIR"}) {
    const char* v = std::getenv(var);
    if (!v || *v != '/') continue;
    std::string dir(v);
    if (auto colon = dir.find(':'); colon != std::string::npos) dir.resize(colon);  // systemd lists
    struct stat st {};
    if (for_others && (::stat(dir.c_str(), &st) != 0 || !(st.st_mode & S_IXOTH))) continue;
    if (dir.size() + sizeof("/tprosshy.XXXXXX") + room_for_names <= sizeof(sockaddr_un::sun_path))
      return dir;
  }
  return "/tmp";
}

[[noreturn]] void fail(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

// Empties a directory without following anything another account may have put in it: each
// name is removed relative to the directory opened, never through a path, and nothing
// deeper (ssh makes only sockets).
void empty(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return;
  DIR* d = ::fdopendir(fd);
  if (!d) {
    ::close(fd);
    return;
  }
  std::vector<std::string> names;
  while (const dirent* e = ::readdir(d))
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
      names.emplace_back(e->d_name);
  for (auto& n : names)
    if (::unlinkat(fd, n.c_str(), 0) != 0 && errno == EISDIR)
      ::unlinkat(fd, n.c_str(), AT_REMOVEDIR);
  ::closedir(d);
}

}  // namespace

control_dir::control_dir(const std::optional<account>& owner) {
  std::string tmpl = base_dir(owner.has_value()) + "/tprosshy.XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  // mkdtemp creates the directory with mode 0700.
  if (!::mkdtemp(buf.data())) fail("cannot create " + tmpl);
  path_ = sockets_ = buf.data();
  if (!owner) return;
  owned_ = true;
  sockets_ = path_ + "/ssh";
  if (::chmod(path_.c_str(), 0711) != 0 || ::mkdir(sockets_.c_str(), 0700) != 0 ||
      ::chown(sockets_.c_str(), owner->uid, owner->gid) != 0) {
    const int e = errno;
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
    errno = e;
    fail("cannot make " + sockets_ + " " + owner->name + "'s");
  }
}

control_dir::~control_dir() {
  if (owned_) {
    empty(sockets_);
    ::rmdir(sockets_.c_str());
    empty(path_);
    ::rmdir(path_.c_str());
    return;
  }
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

}  // namespace tprosshy::tunnel
