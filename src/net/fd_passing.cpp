#include "net/fd_passing.hpp"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace tprosshy::net {

namespace {
constexpr std::size_t max_fds = 4;
}

ssize_t send_with_fds(int sock, std::span<const std::uint8_t> data, std::span<const int> fds,
                      int flags) {
  iovec iov{const_cast<std::uint8_t*>(data.data()), data.size()};
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * max_fds)] = {};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  if (!fds.empty()) {
    if (fds.size() > max_fds) {
      errno = EINVAL;
      return -1;
    }
    m.msg_control = ctl;
    m.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    auto* c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  return ::sendmsg(sock, &m, flags | MSG_NOSIGNAL);
}

ssize_t recv_with_fds(int sock, std::span<std::uint8_t> data, std::vector<unique_fd>& fds,
                      int flags) {
  iovec iov{data.data(), data.size()};
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * max_fds)];
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = ctl;
  m.msg_controllen = sizeof ctl;
  const auto n = ::recvmsg(sock, &m, flags | MSG_CMSG_CLOEXEC);
  if (n < 0) return n;
  for (auto* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const std::size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < k; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      fds.emplace_back(fd);
    }
  }
  return n;
}

}  // namespace tprosshy::net
