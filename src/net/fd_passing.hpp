#pragma once
// Descriptors passed with SCM_RIGHTS, as the helper's protocol and ssh's mux take them.
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "net/fd.hpp"

namespace tprosshy::net {

// One sendmsg(2) of `data` with `fds` (none: a plain send) attached; its result, errno set
// when it is -1. MSG_NOSIGNAL is always added to `flags`.
ssize_t send_with_fds(int sock, std::span<const std::uint8_t> data, std::span<const int> fds,
                      int flags = 0);

// One recvmsg(2) into `data`; up to 4 descriptors that came with it are appended to `fds`
// (close-on-exec), more are closed by the kernel. Its result, errno set when it is -1.
ssize_t recv_with_fds(int sock, std::span<std::uint8_t> data, std::vector<unique_fd>& fds,
                      int flags = 0);

}  // namespace tprosshy::net
