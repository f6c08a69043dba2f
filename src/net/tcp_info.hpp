#pragma once
#include <cstdint>

namespace tprosshy::net {

struct byte_counts {
  std::uint64_t received = 0;  // payload bytes that came in and were read
  std::uint64_t sent = 0;      // payload bytes written, acknowledged or still queued
};

// What a TCP socket carried, from the kernel's own counters (TCP_INFO, SIOCINQ, SIOCOUTQ),
// so it is exact whichever process read and wrote it. Call it before this side sends its
// FIN; the peer's FIN, if any, is not counted. Zeros if the kernel cannot tell.
byte_counts tcp_bytes(int fd);

}  // namespace tprosshy::net
