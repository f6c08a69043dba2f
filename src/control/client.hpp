#pragma once
// The CLI's side of the control socket: one request, one reply, synchronously.
#include <chrono>
#include <filesystem>
#include <string_view>
#include <system_error>

#include "control/protocol.hpp"

namespace tprosshy::control {

// Nothing answers at the path: no such file, or no one listens on it. The CLI says "no
// tprosshy is running on <path>" and exits 69.
struct not_running : std::system_error {
  using std::system_error::system_error;
};

// Connects to `socket`, sends `line` and a newline, and reads the reply until the server
// closes, for at most `timeout` in all. Throws not_running, or std::system_error: EACCES
// (not permitted; the CLI exits 77), ETIMEDOUT, EBADMSG (the connection ended without a
// whole reply).
reply call(const std::filesystem::path& socket, std::string_view line,
           std::chrono::milliseconds timeout = std::chrono::seconds(120));

}  // namespace tprosshy::control
