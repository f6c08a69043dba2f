#include "app/app.hpp"

#include <ifaddrs.h>
#include <linux/capability.h>
#include <net/if.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "app/dns_front.hpp"
#include "app/plan.hpp"
#include "config/config.hpp"
#include "nft/netlink.hpp"
#include "proxy/server.hpp"
#include "routing/table.hpp"
#include "tunnel/control_dir.hpp"
#include "tunnel/ssh.hpp"
#include "tunnel/tunnel.hpp"

namespace tprosshy::app {

namespace asio = boost::asio;
using asio::use_awaitable;
using namespace std::chrono_literals;

namespace {

// sysexits.h
constexpr int ex_ok = 0, ex_usage = 64, ex_noinput = 66, ex_unavailable = 69, ex_software = 70,
              ex_oserr = 71, ex_noperm = 77, ex_config = 78;

constexpr const char* usage_text =
    "usage: tprosshy [-c FILE] [-v]       run until SIGINT or SIGTERM\n"
    "       tprosshy check [-c FILE]      validate FILE and print the nft ruleset\n"
    "       tprosshy --version | --help\n"
    "\n"
    "  -c, --config FILE   config file (default ~/.tprosshy.yaml)\n"
    "  -v, --verbose       more log (repeat for trace)\n";

struct cli {
  bool check = false;
  std::string config;
  int verbose = 0;
};

std::optional<cli> parse_cli(int argc, char** argv, int& exit_code) {
  cli c;
  std::vector<std::string> args(argv + 1, argv + argc);
  for (std::size_t i = 0; i < args.size(); ++i) {
    auto& a = args[i];
    if (a == "--help" || a == "-h") {
      std::cout << usage_text;
      exit_code = ex_ok;
      return std::nullopt;
    } else if (a == "--version") {
      std::cout << "tprosshy " TPROSSHY_VERSION "\n";
      exit_code = ex_ok;
      return std::nullopt;
    } else if (a == "check" && i == 0) {
      c.check = true;
    } else if (a == "-c" || a == "--config") {
      if (i + 1 == args.size()) {
        std::cerr << "tprosshy: " << a << " needs a file\n" << usage_text;
        exit_code = ex_usage;
        return std::nullopt;
      }
      c.config = args[++i];
    } else if (a.starts_with("--config=")) {
      c.config = a.substr(9);
    } else if (a == "-v" || a == "--verbose") {
      ++c.verbose;
    } else if (a == "-vv") {
      c.verbose += 2;
    } else {
      std::cerr << "tprosshy: unknown argument '" << a << "'\n" << usage_text;
      exit_code = ex_usage;
      return std::nullopt;
    }
  }
  if (c.config.empty()) {
    const char* home = std::getenv("HOME");
    c.config = std::string(home ? home : "") + "/.tprosshy.yaml";
  }
  return c;
}

bool has_net_admin() {
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  if (::syscall(SYS_capget, &hdr, data) != 0) return false;
  return data[CAP_NET_ADMIN / 32].effective & (1u << (CAP_NET_ADMIN % 32));
}

// Every flow holds two sockets and maybe two pipes; the default 1024 is far too few.
void raise_fd_limit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
}

bool can_bind(const asio::ip::address& a) {
  asio::io_context io;
  boost::system::error_code ec;
  asio::ip::tcp::acceptor acc(io);
  acc.open(a.is_v4() ? asio::ip::tcp::v4() : asio::ip::tcp::v6(), ec);
  if (!ec) acc.bind({a, 0}, ec);
  return !ec;
}

// Gateway mode listens on the LAN interfaces' own addresses (where the kernel redirects
// their traffic to) and on loopback, never on a wildcard address.
std::vector<asio::ip::tcp::endpoint> listen_endpoints(const config::config& cfg) {
  std::vector<asio::ip::tcp::endpoint> eps;
  auto add = [&](const asio::ip::address& a) {
    asio::ip::tcp::endpoint ep(a, cfg.tcp_port);
    if (std::find(eps.begin(), eps.end(), ep) == eps.end() && can_bind(a)) eps.push_back(ep);
  };
  add(cfg.listen_address.value_or(asio::ip::make_address("127.0.0.1")));
  add(asio::ip::make_address("::1"));
  if (cfg.mode == config::run_mode::gateway && !cfg.listen_address) {
    ifaddrs* ifs = nullptr;
    if (::getifaddrs(&ifs) == 0) {
      for (auto* i = ifs; i; i = i->ifa_next) {
        if (!i->ifa_addr) continue;
        if (std::find(cfg.gateway_interfaces.begin(), cfg.gateway_interfaces.end(), i->ifa_name) ==
            cfg.gateway_interfaces.end())
          continue;
        if (i->ifa_addr->sa_family == AF_INET) {
          auto* s = reinterpret_cast<sockaddr_in*>(i->ifa_addr);
          add(asio::ip::address_v4(ntohl(s->sin_addr.s_addr)));
        } else if (i->ifa_addr->sa_family == AF_INET6) {
          auto* s = reinterpret_cast<sockaddr_in6*>(i->ifa_addr);
          asio::ip::address_v6::bytes_type b;
          std::memcpy(b.data(), &s->sin6_addr, 16);
          asio::ip::address_v6 a(b);
          if (!a.is_link_local()) add(a);
        }
      }
      ::freeifaddrs(ifs);
    }
  }
  return eps;
}

void setup_logging(const std::string& level, int verbose) {
  auto logger = spdlog::stderr_color_mt("tprosshy");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%-5l%$ %v");
  auto lvl = spdlog::level::from_str(level);
  if (verbose > 0) lvl = std::min(lvl, verbose > 1 ? spdlog::level::trace : spdlog::level::debug);
  spdlog::set_level(lvl);
  spdlog::flush_on(spdlog::level::trace);
}

// The ssh servers of every enabled profile, so that ssh's own connections (and its
// reconnects) are never redirected, even for a profile that routes 0.0.0.0/0.
asio::awaitable<std::vector<nft::endpoint>> bypass_of(const config::profile& p) {
  std::vector<nft::endpoint> out;
  for (auto& ep : co_await tunnel::server_endpoints(p.ssh_args, p.host))
    out.push_back({ep.address(), ep.port(), p.name});
  co_return out;
}

int check(const cli& c) {
  auto cfg = config::load(c.config);
  auto table = make_table(cfg);
  asio::io_context io;
  std::vector<nft::endpoint> bypass;
  for (auto& p : cfg.profiles) {
    if (!p.enabled) continue;
    asio::co_spawn(io, bypass_of(p), [&](std::exception_ptr e, std::vector<nft::endpoint> b) {
      if (e) {
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& x) {
          std::cerr << "tprosshy: profile " << p.name << ": " << x.what()
                    << " (its ssh server is left out of the bypass rules below)\n";
        }
      }
      bypass.insert(bypass.end(), b.begin(), b.end());
    });
  }
  io.run();
  bool dns = wants_dns(cfg);
  ports p{cfg.tcp_port, dns ? std::optional(cfg.dns_port) : std::nullopt};
  if (p.tcp == 0 || (dns && *p.dns == 0))
    std::cout << "# A port of 0 below stands for the free port tprosshy picks when it starts.\n";
  std::cout << nft::render(
      make_ruleset(cfg, table, bypass, p,
                   dns ? read_resolv_conf("/etc/resolv.conf") : std::vector<net::address>{}));
  return ex_ok;
}

class runner {
 public:
  runner(asio::io_context& io, config::config cfg, nft::netlink& nl)
      : io_(io), cfg_(std::move(cfg)), nl_(nl), table_(make_table(cfg_)) {}

  asio::awaitable<int> run() {
    auto ex = co_await asio::this_coro::executor;
    asio::signal_set signals(ex, SIGINT, SIGTERM);
    bool signalled = false;
    signals.async_wait([&](auto ec, int sig) {
      if (ec) return;
      spdlog::info("signal {}: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
      signalled = true;
      wake_.cancel();
    });

    std::string listen_error;
    try {
      server_.emplace(ex, listen_endpoints(cfg_), [this](const auto& dst) { return route(dst); });
      server_->start();
    } catch (const boost::system::system_error& e) {
      listen_error = e.code().message();
    }
    if (!listen_error.empty()) {
      spdlog::error("cannot listen on TCP port {}: {}", cfg_.tcp_port, listen_error);
      co_return co_await shutdown(ex_oserr);
    }
    try {
      std::vector<asio::ip::address> addrs;
      for (auto& ep : server_->local_endpoints()) addrs.push_back(ep.address());
      dns_ = dns_front::make(
          ex, cfg_, addrs,
          [this](std::size_t id) -> std::shared_ptr<tunnel::tunnel> {
            if (id < tunnels_.size() && tunnels_[id] && tunnels_[id]->up()) return tunnels_[id];
            return nullptr;
          },
          [this](std::size_t id, const net::address& a, std::uint32_t ttl) { learn(id, a, ttl); });
    } catch (const boost::system::system_error& e) {
      listen_error = e.code().message();
    }
    if (!listen_error.empty()) {
      spdlog::error("cannot listen on DNS port {}: {}", cfg_.dns_port, listen_error);
      co_return co_await shutdown(ex_oserr);
    }
    asio::co_spawn(ex, expire_learned(), asio::detached);
    tunnels_.resize(cfg_.profiles.size());
    first_.assign(cfg_.profiles.size(), false);
    std::vector<nft::endpoint> bypass;
    std::size_t pending = 0;
    for (std::size_t id = 0; id < cfg_.profiles.size(); ++id) {
      auto& p = cfg_.profiles[id];
      if (!p.enabled) continue;
      ++pending;
      asio::co_spawn(ex, start_profile(id, bypass), asio::detached);
    }
    // All profiles start at once; wait for each one's first verdict (or a signal).
    for (;;) {
      std::size_t done = 0, up = 0;
      for (std::size_t id = 0; id < first_.size(); ++id) {
        if (first_[id]) ++done;
        if (tunnels_[id] && tunnels_[id]->up()) ++up;
      }
      if (signalled) co_return co_await shutdown(ex_ok);
      if (done == pending) {
        if (up > 0 || cfg_.on_start_failure == config::start_failure::retry) break;
        for (std::size_t id = 0; id < cfg_.profiles.size(); ++id)
          if (first_[id] && !reason_[id].empty())
            spdlog::error("[{}] cannot connect to {}: {}", cfg_.profiles[id].name,
                          cfg_.profiles[id].host, reason_[id]);
        spdlog::error(
            "no profile's tunnel came up; exiting (on_start_failure: retry keeps trying)");
        co_return co_await shutdown(ex_unavailable);
      }
      wake_.expires_at(asio::steady_timer::time_point::max());
      co_await wake_.async_wait(asio::as_tuple(use_awaitable));
    }

    if (dns_) co_await dns_->discovered(10s);
    int failed = 0;
    try {
      ports p{server_->port(), dns_ ? std::optional(dns_->port()) : std::nullopt};
      nl_.install(make_ruleset(cfg_, table_, bypass, p,
                               dns_ ? dns_->system_resolvers() : std::vector<net::address>{}));
      installed_ = true;
    } catch (const std::system_error& e) {
      spdlog::error("cannot install the nftables ruleset: {}", e.what());
      failed = e.code().value() == EPERM ? ex_noperm : ex_oserr;
    }
    if (failed) co_return co_await shutdown(failed);
    std::size_t up = 0, enabled = 0;
    std::string down;
    for (std::size_t id = 0; id < cfg_.profiles.size(); ++id) {
      if (!cfg_.profiles[id].enabled) continue;
      ++enabled;
      if (tunnels_[id] && tunnels_[id]->up())
        ++up;
      else
        down += (down.empty() ? "; retrying " : ", ") + cfg_.profiles[id].name;
    }
    spdlog::info("ready: {}/{} profiles up, TCP on port {}{}{}", up, enabled, server_->port(),
                 dns_ ? ", DNS on port " + std::to_string(dns_->port()) : "", down);
    while (!signalled) {
      wake_.expires_at(asio::steady_timer::time_point::max());
      co_await wake_.async_wait(asio::as_tuple(use_awaitable));
    }
    co_return co_await shutdown(ex_ok);
  }

 private:
  asio::awaitable<void> start_profile(std::size_t id, std::vector<nft::endpoint>& bypass) {
    auto& p = cfg_.profiles[id];
    try {
      auto b = co_await bypass_of(p);
      bypass.insert(bypass.end(), b.begin(), b.end());
    } catch (const std::exception& e) {
      reason_[id] = e.what();
    }
    if (!reason_[id].empty()) {
      first_[id] = true;
      wake_.cancel();
      co_return;
    }
    tunnel::options o;
    o.profile = p.name;
    o.destination = p.host;
    o.ssh_args = p.ssh_args;
    o.control_path = dir_.socket(p.name);
    tunnels_[id] = std::make_shared<tunnel::tunnel>(
        co_await asio::this_coro::executor, o,
        [this, id](tunnel::state s, const std::string& why) { on_state(id, s, why); });
    co_await tunnels_[id]->run();
  }

  void on_state(std::size_t id, tunnel::state s, const std::string& why) {
    auto& name = cfg_.profiles[id].name;
    if (s == tunnel::state::up) {
      spdlog::info("[{}] tunnel up (ssh pid {})", name, tunnels_[id]->pid());
      if (dns_) dns_->tunnel_up(id);
    } else if (s == tunnel::state::down) {
      reason_[id] = why.empty() ? "ssh exited" : why;
      spdlog::warn("[{}] tunnel down: {}", name, reason_[id]);
    }
    if ((s == tunnel::state::up || s == tunnel::state::down) && !first_[id]) {
      first_[id] = true;
      wake_.cancel();
    }
  }

  // An address a profile's nameserver answered routes through that profile for its TTL,
  // in the dispatcher and in the kernel's timeout set alike.
  void learn(std::size_t id, const net::address& a, std::uint32_t ttl) {
    auto& p = cfg_.profiles[id];
    if (!p.dns.learn_routes || ttl == 0) return;
    table_.learn(a, id, routing::clock::now() + std::chrono::seconds(ttl));
    if (!installed_) return;
    try {
      nl_.learn(p.name, a, std::chrono::seconds(ttl));
    } catch (const std::exception& e) {
      spdlog::warn("[{}] cannot add learned address {}: {}", p.name, a.to_string(), e.what());
    }
  }

  asio::awaitable<void> expire_learned() {
    asio::steady_timer t(co_await asio::this_coro::executor);
    while (!stopping_) {
      t.expires_after(10s);
      co_await t.async_wait(asio::as_tuple(use_awaitable));
      table_.expire(routing::clock::now());
    }
  }

  std::optional<proxy::route> route(const asio::ip::tcp::endpoint& dst) {
    auto id = table_.lookup(dst.address());
    if (!id || *id >= tunnels_.size() || !tunnels_[*id] || !tunnels_[*id]->up()) {
      spdlog::debug("{}: no tunnel up for it; reset", dst.address().to_string());
      return std::nullopt;
    }
    return proxy::route{cfg_.profiles[*id].name, tunnels_[*id]};
  }

  // Open flows are reset while the ruleset is still in, so their resets reach the clients
  // through the same NAT translation as the rest of each flow.
  asio::awaitable<int> shutdown(int code) {
    stopping_ = true;
    if (dns_) dns_->stop();
    if (server_) server_->stop();
    for (auto& t : tunnels_)
      if (t) t->stop();
    asio::steady_timer t(co_await asio::this_coro::executor);
    for (int i = 0; i < 100; ++i) {
      bool all = !server_ || server_->active_flows() == 0;
      for (auto& tn : tunnels_)
        if (tn && tn->current() != tunnel::state::stopped) all = false;
      if (all) break;
      t.expires_after(20ms);
      co_await t.async_wait(use_awaitable);
    }
    if (installed_) {
      try {
        nl_.remove();
      } catch (const std::exception& e) {
        spdlog::error("cannot remove the nftables table: {}", e.what());
      }
    }
    io_.stop();
    co_return code;
  }

  asio::io_context& io_;
  config::config cfg_;
  nft::netlink& nl_;
  routing::table table_;
  std::optional<proxy::server> server_;
  std::unique_ptr<dns_front> dns_;
  bool stopping_ = false;
  tunnel::control_dir dir_;
  std::vector<std::shared_ptr<tunnel::tunnel>> tunnels_;
  std::vector<bool> first_;
  std::vector<std::string> reason_ = std::vector<std::string>(cfg_.profiles.size());
  asio::steady_timer wake_{io_};
  bool installed_ = false;
};

int run(const cli& c) {
  auto cfg = config::load(c.config);
  setup_logging(cfg.log_level, c.verbose);
  if (!has_net_admin()) {
    std::cerr << "tprosshy: needs CAP_NET_ADMIN to install its nftables rules (run as root)\n";
    return ex_noperm;
  }
  if (tunnel::find_ssh().empty()) {
    std::cerr << "tprosshy: ssh is not installed (no 'ssh' in PATH)\n";
    return ex_unavailable;
  }
  raise_fd_limit();
  std::signal(SIGPIPE, SIG_IGN);
  std::optional<nft::netlink> nl;
  try {
    nl.emplace();
  } catch (const std::system_error& e) {
    std::cerr << "tprosshy: cannot open netlink: " << e.what() << "\n";
    return e.code().value() == EPERM ? ex_noperm : ex_oserr;
  }
  asio::io_context io(1);
  runner r(io, std::move(cfg), *nl);
  int code = ex_software;
  asio::co_spawn(io, r.run(), [&](std::exception_ptr e, int rc) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& x) {
        spdlog::critical("{}", x.what());
      }
      io.stop();
      return;
    }
    code = rc;
  });
  io.run();
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  int code = ex_ok;
  auto c = parse_cli(argc, argv, code);
  if (!c) return code;
  try {
    return c->check ? check(*c) : run(*c);
  } catch (const config::error& e) {
    std::cerr << e.what() << "\n";
    return ex_config;
  } catch (const std::system_error& e) {
    std::cerr << "tprosshy: " << c->config << ": " << e.code().message() << "\n";
    return ex_noinput;
  } catch (const std::exception& e) {
    std::cerr << "tprosshy: " << e.what() << "\n";
    return ex_software;
  }
}

}  // namespace tprosshy::app
