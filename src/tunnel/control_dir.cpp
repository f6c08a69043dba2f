#include "tunnel/control_dir.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
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

constexpr const char* lock_name = "lock";

// Empties a directory without following anything another account may have put in it: each
// name is removed relative to the directory opened, never through a path, and nothing
// deeper (ssh makes only sockets).
void empty_at(int parent, const char* dir) {
  const int fd = ::openat(parent, dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
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

void empty(const std::string& dir) { empty_at(AT_FDCWD, dir.c_str()); }

// The directories of our runs killed outright (SIGKILL, OOM, a crash) in `base`: ours (owner,
// not a symlink), named as we name them, with a lock file nobody holds. A live run holds
// its lock from before the file has that name, so a run starting beside this one is never
// taken for dead, and a directory without a lock (another program's) is left alone.
void sweep(const std::string& base) {
  const int bfd = ::open(base.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (bfd < 0) return;
  DIR* d = ::fdopendir(bfd);
  if (!d) {
    ::close(bfd);
    return;
  }
  std::vector<std::string> dead;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (!name.starts_with("tprosshy.") || name.size() != sizeof("tprosshy.XXXXXX") - 1) continue;
    const int fd = ::openat(bfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) continue;
    struct stat st {};
    const int lock = ::fstat(fd, &st) == 0 && st.st_uid == ::geteuid()
                         ? ::openat(fd, lock_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
                         : -1;
    if (lock >= 0 && ::flock(lock, LOCK_EX | LOCK_NB) == 0) dead.push_back(name);
    if (lock >= 0) ::close(lock);
    ::close(fd);
  }
  for (const auto& name : dead) {
    // Its owner's subdirectory (ssh_user) first, then its own files, then itself.
    const int fd = ::openat(bfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) continue;
    empty_at(fd, "ssh");
    ::unlinkat(fd, "ssh", AT_REMOVEDIR);
    ::close(fd);
    empty_at(bfd, name.c_str());
    ::unlinkat(bfd, name.c_str(), AT_REMOVEDIR);
  }
  ::closedir(d);
}

}  // namespace

control_dir::control_dir(const std::optional<account>& owner) {
  const auto base = base_dir(owner.has_value());
  sweep(base);
  std::string tmpl = base + "/tprosshy.XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  // mkdtemp creates the directory with mode 0700.
  if (!::mkdtemp(buf.data())) fail("cannot create " + tmpl);
  path_ = sockets_ = buf.data();
  // Held until this process ends, however it ends; locked before it is named "lock".
  const auto pending = path_ + "/" + lock_name + ".new";
  lock_ = ::open(pending.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (lock_ < 0 || ::flock(lock_, LOCK_EX) != 0 ||
      ::rename(pending.c_str(), (path_ + "/" + lock_name).c_str()) != 0) {
    const int e = errno;
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
    errno = e;
    fail("cannot lock " + path_);
  }
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
  if (lock_ >= 0) ::close(lock_);
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
