#pragma once
// What tprosshy asks of OpenSSH: where it really connects (`ssh -G`) and the tunnel's
// command line.
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "tunnel/account.hpp"

namespace tprosshy::tunnel {

using tcp = boost::asio::ip::tcp;

// The parts of `ssh -G` output that decide where ssh's own TCP connection goes.
struct ssh_facts {
  std::string hostname;
  uint16_t port = 22;
  std::vector<std::string> proxy_jump;  // empty when none
  bool proxy_command = false;           // ssh's connection is some program's business
  std::string host_key_checking;        // StrictHostKeyChecking: true, false, ask, accept-new
};

// The settings ssh would use for a server do not check its host key (StrictHostKeyChecking
// no, from an ssh_config) and the profile pins none: whoever answers on the path would get
// every flow.
struct unchecked_host_keys : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Parses `ssh -G` output.
ssh_facts parse_ssh_g(const std::string& text);

// Splits a ProxyJump entry ("[user@]host[:port]" or "ssh://[user@]host[:port]") into an
// ssh destination and port.
struct jump {
  std::string destination;
  std::optional<uint16_t> port;
};
std::optional<jump> parse_jump(const std::string& entry);

// Each ssh runs as `as` when given (a root tprosshy's ssh_user), else as this process.

// Runs `ssh -G`. Throws std::runtime_error with ssh's message if ssh refuses.
boost::asio::awaitable<ssh_facts> query(const std::vector<std::string>& ssh_args,
                                        const std::string& destination,
                                        std::optional<account> as = std::nullopt);

// The addresses and ports ssh connects to for this destination: the first ProxyJump hop
// if there is one, else the host itself, resolved. Unless the profile pins its keys
// (`pinned`: tprosshy then turns strict checking on itself), ssh's settings for the
// destination must check its host key, else unchecked_host_keys. `checking`, when given,
// gets that setting as `ssh -G` said it. Throws std::runtime_error on failure.
boost::asio::awaitable<std::vector<tcp::endpoint>> server_endpoints(
    const std::vector<std::string>& ssh_args, const std::string& destination,
    std::optional<account> as = std::nullopt, bool pinned = false, std::string* checking = nullptr);

// The host keys a server offers, as "type base64" lines (ssh-keyscan). Throws
// std::runtime_error when it answers none.
boost::asio::awaitable<std::vector<std::string>> keyscan(const std::string& host, uint16_t port,
                                                         std::optional<account> as = std::nullopt);

// ssh -N -o ControlMaster=yes -o ControlPath=control_path ... [ssh_args] -- destination.
// Our -o options come first because ssh keeps the first value it sees of each option, so
// no ssh_config can turn the master, its socket or batch mode off.
std::vector<std::string> tunnel_command(const std::vector<std::string>& ssh_args,
                                        const std::string& destination,
                                        const std::string& control_path);

// The ssh binary from PATH; empty if there is none.
std::string find_ssh();

}  // namespace tprosshy::tunnel
