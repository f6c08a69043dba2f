#include "tunnel/control_dir.hpp"

#include <sys/stat.h>
#include <sys/un.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <system_error>
#include <vector>

namespace tprosshy::tunnel {

namespace {

// ssh binds "<ControlPath>.<16 random characters>" first, and a Unix socket path has at
// most sizeof(sun_path) - 1 bytes; leave room for a 40-character tunnel name.
constexpr std::size_t room_for_names = 1 + 40 + 17;

std::string base_dir() {
  for (const char* var : {"RUNTIME_DIRECTORY", "TMPDIR"}) {
    const char* v = std::getenv(var);
    if (!v || *v != '/') continue;
    std::string dir(v);
    if (auto colon = dir.find(':'); colon != std::string::npos) dir.resize(colon);  // systemd lists
    if (dir.size() + sizeof("/tprosshy.XXXXXX") + room_for_names <= sizeof(sockaddr_un::sun_path))
      return dir;
  }
  return "/tmp";
}

}  // namespace

control_dir::control_dir() {
  std::string tmpl = base_dir() + "/tprosshy.XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  // mkdtemp creates the directory with mode 0700.
  if (!::mkdtemp(buf.data()))
    throw std::system_error(errno, std::generic_category(), "cannot create " + tmpl);
  path_ = buf.data();
}

control_dir::~control_dir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

}  // namespace tprosshy::tunnel
