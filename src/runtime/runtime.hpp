#pragma once
// The running router: every profile by name, the listeners, the DNS front, the ruleset in
// the kernel, and the snapshot new flows are routed by. One io_context runs it all on one
// thread (docs/ARCHITECTURE.md, "Threading"), so none of this is locked.
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "control/status.hpp"
#include "nft/ruleset.hpp"
#include "runtime/profile.hpp"

namespace tprosshy::runtime {

// A listener could not be bound; what() names the port and why.
struct listen_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Where the ruleset goes: the helper process (docs/ARCHITECTURE.md, "The trust boundary").
// Each call is one atomic change or throws std::system_error saying what was refused.
// The account ssh_user names (every ssh runs as it); none when unset. Throws
// std::runtime_error, naming where ssh_user is set, when the account is gone.
std::optional<tunnel::account> ssh_account(const config::config& c);

class kernel {
 public:
  virtual ~kernel() = default;
  virtual void install(const nft::ruleset& r) = 0;
  // With `forget`, that address (the one the limit pushed out) goes in the same change.
  virtual void learn(const std::string& profile, const net::address& a, std::chrono::seconds ttl,
                     std::optional<net::address> forget) = 0;
  virtual void remove() = 0;
  // Packets the installed ruleset refused, by profile, since it was installed.
  virtual std::map<std::string, std::uint64_t> refused() = 0;
  // Whether this process may not mark its sockets itself (no CAP_NET_ADMIN): then its own
  // sockets, which the ruleset must never redirect, come from own_socket().
  virtual bool confined() const = 0;
  // A descriptor every ssh inherits (the helper's lifeline), so that after a crash the
  // ruleset stands until ssh has reset its flows; -1: none.
  virtual int lifeline() const = 0;
  virtual int own_socket(int family, int type) = 0;
};

class runtime {
 public:
  runtime(boost::asio::any_io_executor ex, config::config cfg, kernel& k);
  ~runtime();
  runtime(const runtime&) = delete;
  runtime& operator=(const runtime&) = delete;

  // Binds the TCP listener, and the DNS one when a profile has domains. Throws
  // listen_error.
  void listen();
  // Starts every enabled profile.
  void start();
  // Completes when every enabled profile's first start has ended, up or not.
  boost::asio::awaitable<void> first_verdicts();
  // Completes when no remote nameserver is being read any more, or after `limit`.
  boost::asio::awaitable<void> nameservers_known(std::chrono::milliseconds limit);
  // Installs the ruleset (one atomic batch). Throws std::system_error.
  void install();
  // Addresses a crashed run had learned (its lock table's, by profile name), routed again
  // for the time they have left, by the profiles of those names that learn routes: so a
  // client's cached answer does not go direct after the restart. Before the first install.
  std::size_t adopt(const std::map<std::string, std::vector<nft::learned_address>>& learned);
  // Stops listening, stops every tunnel (their flows are reset while the ruleset still
  // translates them), waits for them, then removes the ruleset.
  boost::asio::awaitable<void> stop();

  // Loads `file`, and if it is valid and changes nothing that cannot change live, applies
  // it: profiles are matched by name; those whose connection (host, ssh_args) is the same
  // keep their ssh and every flow; the others get a new ssh for new flows while the old one
  // drains; the ruleset is replaced in one batch with the learned routes kept. Otherwise
  // nothing changes. One reload at a time.
  struct reload_result {
    int code = 0;         // sysexits: 0 applied, 78 invalid config, 66 unreadable, 71 kernel
    std::string message;  // what was done, or why not
  };
  boost::asio::awaitable<reload_result> reload(std::filesystem::path file);

  control::status status() const;

  std::size_t enabled() const;
  std::size_t up() const;
  // The enabled profiles that are not up, with why, in config order.
  std::vector<const profile*> down() const;
  std::uint16_t tcp_port() const;
  std::optional<std::uint16_t> dns_port() const;
  const config::config& config() const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace tprosshy::runtime
