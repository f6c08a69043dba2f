#include "app/app.hpp"

#include <linux/capability.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "app/notify.hpp"
#include "app/privileges.hpp"
#include "config/config.hpp"
#include "control/client.hpp"
#include "control/metrics.hpp"
#include "control/render.hpp"
#include "control/server.hpp"
#include "helper/client.hpp"
#include "helper/server.hpp"
#include "net/exit_codes.hpp"
#include "nft/netlink.hpp"
#include "runtime/dns.hpp"
#include "runtime/plan.hpp"
#include "runtime/runtime.hpp"
#include "tunnel/ssh.hpp"

namespace tprosshy::app {

namespace asio = boost::asio;
using asio::use_awaitable;
using namespace std::chrono_literals;

namespace {

namespace ex = exit_code;

constexpr const char* usage_text =
    "usage: tprosshy [-c FILE] [-v]           run until SIGINT or SIGTERM (SIGHUP reloads)\n"
    "       tprosshy check [--effective] [-c FILE]\n"
    "                                         validate FILE and print the nft ruleset, or\n"
    "                                         the merged config with where each value is from\n"
    "       tprosshy reload [-c FILE]         make the running tprosshy apply FILE; waits\n"
    "       tprosshy status [--json] [-c FILE]  what the running tprosshy is doing\n"
    "       tprosshy keyscan [-c FILE] [PROFILE...]\n"
    "                                         print each profile's servers' host keys, for\n"
    "                                         its host_keys\n"
    "       tprosshy unlock                   remove the lockdown table a crashed tprosshy\n"
    "                                         left (root)\n"
    "       tprosshy helper [--socket PATH [--group NAME] | --stdio | --sudoers]\n"
    "                                         the privileged helper (root): installs rulesets\n"
    "                                         for its callers; --sudoers prints the line that\n"
    "                                         lets this user start one with sudo\n"
    "       tprosshy --version | --help\n"
    "\n"
    "  -c, --config FILE   config file (default ~/.tprosshy.yaml); reload and status find\n"
    "                      the running tprosshy by its control.socket\n"
    "  -v, --verbose       more log (repeat for trace)\n";

enum class verb { run, check, reload, status, keyscan, helper, unlock };

struct cli {
  verb what = verb::run;
  std::string config;
  int verbose = 0;
  bool effective = false;          // check --effective
  bool json = false;               // status --json
  std::vector<std::string> names;  // keyscan PROFILE...
  helper::options helper;          // helper --socket PATH | --stdio
  bool sudoers = false;            // helper --sudoers
};

std::optional<cli> parse_cli(int argc, char** argv, int& exit_code) {
  cli c;
  std::vector<std::string> args(argv + 1, argv + argc);
  for (std::size_t i = 0; i < args.size(); ++i) {
    auto& a = args[i];
    if (a == "--help" || a == "-h") {
      std::cout << usage_text;
      exit_code = ex::ok;
      return std::nullopt;
    } else if (a == "--version") {
      std::cout << "tprosshy " TPROSSHY_VERSION "\n";
      exit_code = ex::ok;
      return std::nullopt;
    } else if (i == 0 && (a == "check" || a == "reload" || a == "status" || a == "keyscan")) {
      c.what = a == "check"    ? verb::check
               : a == "reload" ? verb::reload
               : a == "status" ? verb::status
                               : verb::keyscan;
    } else if (i == 0 && a == "helper") {
      c.what = verb::helper;
    } else if (i == 0 && a == "unlock") {
      c.what = verb::unlock;
    } else if (c.what == verb::helper && a == "--group" && i + 1 < args.size()) {
      c.helper.group = args[++i];
    } else if (c.what == verb::helper && a == "--sudoers") {
      c.sudoers = true;
    } else if (c.what == verb::helper && a == "--stdio" && c.helper.socket.empty()) {
      c.helper.stdio = true;
    } else if (c.what == verb::helper && a == "--socket" && i + 1 < args.size() &&
               !c.helper.stdio) {
      c.helper.socket = args[++i];
    } else if (a == "--effective" && c.what == verb::check) {
      c.effective = true;
    } else if (a == "--json" && c.what == verb::status) {
      c.json = true;
    } else if (a == "-c" || a == "--config") {
      if (i + 1 == args.size()) {
        std::cerr << "tprosshy: " << a << " needs a file\n" << usage_text;
        exit_code = ex::usage;
        return std::nullopt;
      }
      c.config = args[++i];
    } else if (a.starts_with("--config=")) {
      c.config = a.substr(9);
    } else if (a == "-v" || a == "--verbose") {
      ++c.verbose;
    } else if (a == "-vv") {
      c.verbose += 2;
    } else if (c.what == verb::keyscan && !a.starts_with("-")) {
      c.names.push_back(a);
    } else {
      std::cerr << "tprosshy: unknown argument '" << a << "'\n" << usage_text;
      exit_code = ex::usage;
      return std::nullopt;
    }
  }
  if (c.config.empty()) {
    // Under sudo, ~ is the user's, as it is for `sudo tprosshy -c ~/.tprosshy.yaml`.
    const char* home = std::getenv("HOME");
    const auto u = sudo_user();
    c.config = (u ? u->home : std::string(home ? home : "")) + "/.tprosshy.yaml";
  }
  return c;
}

// The signals a run acts on. They are blocked from the first instruction of main() until
// the run's signal_set takes them over, so one that comes early is not lost to its
// default action; children get an empty mask (tunnel/process.hpp).
sigset_t stop_signals() {
  sigset_t s;
  sigemptyset(&s);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&s, sig);
  return s;
}

void unblock_signals() {
  const auto s = stop_signals();
  ::sigprocmask(SIG_UNBLOCK, &s, nullptr);
}

bool has_cap(int cap) {
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  if (::syscall(SYS_capget, &hdr, data) != 0) return false;
  return data[cap / 32].effective & (1u << (cap % 32));
}

bool has_net_admin() { return has_cap(CAP_NET_ADMIN); }

// What a root tprosshy needs to run ssh as ssh_user: become it, give it its socket
// directory, reach the sockets it makes there and signal it. Empty when it has all.
std::string missing_for_ssh_user() {
  std::string missing;
  for (auto [cap, name] : {std::pair{CAP_SETUID, "CAP_SETUID"},
                           {CAP_SETGID, "CAP_SETGID"},
                           {CAP_CHOWN, "CAP_CHOWN"},
                           {CAP_DAC_OVERRIDE, "CAP_DAC_OVERRIDE"},
                           {CAP_KILL, "CAP_KILL"}})
    if (!has_cap(cap)) missing += (missing.empty() ? "" : " ") + std::string(name);
  return missing;
}

// Every flow holds sockets in tprosshy and in ssh (which inherits the limit).
void raise_fd_limit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
}

// log.level, unless -v asks for more.
void set_log_level(const std::string& level, int verbose) {
  auto lvl = spdlog::level::from_str(level);
  if (verbose > 0) lvl = std::min(lvl, verbose > 1 ? spdlog::level::trace : spdlog::level::debug);
  spdlog::set_level(lvl);
}

void setup_logging(const std::string& level, int verbose) {
  auto logger = spdlog::stderr_color_mt("tprosshy");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%-5l%$ %v");
  set_log_level(level, verbose);
  spdlog::flush_on(spdlog::level::trace);
}

// For check: where `host` of `p` is, warning when ssh would take its key unseen.
asio::awaitable<std::vector<asio::ip::tcp::endpoint>> servers_of(
    const config::profile& p, const std::string& host, std::optional<tunnel::account> as) {
  std::string checking;
  auto eps =
      co_await tunnel::server_endpoints(p.ssh_args, host, as, !p.host_keys.empty(), &checking);
  if (checking == "accept-new" && p.host_keys.empty())
    std::cerr << "tprosshy: warning: profile " << p.name << ": ssh's settings for " << host
              << " accept a server's key unseen the first time (StrictHostKeyChecking "
                 "accept-new); pin it in host_keys (tprosshy keyscan prints it)\n";
  co_return eps;
}

// ssh_user takes root; anyone else asks ssh as themselves (check, keyscan).
std::optional<tunnel::account> ssh_as_for_verbs(const config::config& cfg) {
  return ::geteuid() == 0 ? runtime::ssh_account(cfg) : std::nullopt;
}

int check(const cli& c) {
  unblock_signals();
  if (c.effective) {
    std::cout << config::effective_yaml(c.config);
    return ex::ok;
  }
  auto cfg = config::load(c.config);
  auto table = runtime::make_table(cfg);
  const auto ssh_as = ssh_as_for_verbs(cfg);
  asio::io_context io;
  // One slot per host of each profile (backups too: a run bypasses them all), filled in
  // any order, printed in config order.
  std::vector<std::vector<nft::endpoint>> bypass;
  int code = ex::ok;
  for (auto& p : cfg.profiles) {
    if (!p.enabled) continue;
    for (auto& host : p.hosts) {
      const auto slot = bypass.size();
      bypass.emplace_back();
      asio::co_spawn(io, servers_of(p, host, ssh_as),
                     [&, slot](std::exception_ptr e, std::vector<asio::ip::tcp::endpoint> eps) {
                       for (auto& ep : eps)
                         bypass[slot].push_back({ep.address(), ep.port(), p.name});
                       if (!e) return;
                       try {
                         std::rethrow_exception(e);
                       } catch (const tunnel::unchecked_host_keys& x) {
                         std::cerr << "tprosshy: profile " << p.name << ": " << x.what() << "\n";
                         code = ex::config;
                       } catch (const std::exception& x) {
                         std::cerr << "tprosshy: profile " << p.name << ": " << x.what()
                                   << " (its ssh server " << host
                                   << " is left out of the bypass rules below)\n";
                       }
                     });
    }
  }
  io.run();
  std::vector<nft::endpoint> all;
  for (auto& b : bypass) all.insert(all.end(), b.begin(), b.end());
  const bool dns = runtime::wants_dns(cfg);
  runtime::ports p{cfg.tcp_port, dns ? std::optional(cfg.dns_port) : std::nullopt};
  if (p.tcp == 0 || (dns && *p.dns == 0))
    std::cout << "# A port of 0 below stands for the free port tprosshy picks when it starts.\n";
  std::cout << nft::render(runtime::make_ruleset(
      cfg, table, all, p,
      dns ? runtime::read_resolv_conf("/etc/resolv.conf") : std::vector<net::address>{}));
  return code;
}

// keyscan: the host_keys entries to paste, for each profile's hosts as `ssh -G` sees them.
int keyscan(const cli& c) {
  unblock_signals();
  auto cfg = config::load(c.config);
  for (auto& n : c.names)
    if (std::none_of(cfg.profiles.begin(), cfg.profiles.end(),
                     [&](auto& p) { return p.name == n; })) {
      std::cerr << "tprosshy: " << c.config << ": no profile named '" << n << "'\n";
      return ex::usage;
    }
  const auto ssh_as = ssh_as_for_verbs(cfg);
  asio::io_context io;
  int code = ex::ok;
  auto scan = [&]() -> asio::awaitable<void> {
    std::cout << "profiles:\n";
    for (auto& p : cfg.profiles) {
      if (c.names.empty() ? !p.enabled
                          : std::find(c.names.begin(), c.names.end(), p.name) == c.names.end())
        continue;
      std::cout << "  " << p.name << ":\n    host_keys:\n";
      for (auto& host : p.hosts) {
        try {
          const auto f = co_await tunnel::query(p.ssh_args, host, ssh_as);
          if (!f.proxy_jump.empty() || f.proxy_command) {
            std::cout << "      # " << host << " is reached through "
                      << (f.proxy_command ? "a ProxyCommand" : "ProxyJump " + f.proxy_jump.front())
                      << ", which ssh-keyscan cannot go through: take its keys from its "
                         "/etc/ssh/ssh_host_*_key.pub\n";
            code = ex::unavailable;
            continue;
          }
          for (auto& k : co_await tunnel::keyscan(f.hostname, f.port, ssh_as))
            std::cout << "      - \"" << k << "\"  # " << host << " (" << f.hostname << ":"
                      << f.port << ")\n";
        } catch (const std::exception& e) {
          std::cout << "      # " << host << ": " << e.what() << "\n";
          code = ex::unavailable;
        }
      }
    }
  };
  asio::co_spawn(io, scan(), asio::detached);
  io.run();
  return code;
}

// reload and status: one request to the running tprosshy's control socket.
int ask(const cli& c) {
  unblock_signals();
  const auto socket = config::control_socket_of(c.config);
  std::string line;
  if (c.what == verb::status)
    line = c.json ? "status json" : "status";
  else
    line = control::reload_line(c.config);
  try {
    auto r = control::call(socket, line, c.what == verb::status ? 10s : 120s);
    (r.code == 0 ? std::cout : std::cerr) << r.text;
    if (!r.text.empty() && r.text.back() != '\n') (r.code == 0 ? std::cout : std::cerr) << "\n";
    return r.code;
  } catch (const control::not_running&) {
    std::cerr << "tprosshy: no tprosshy is running on " << socket.string() << "\n";
    return ex::unavailable;
  } catch (const std::system_error& e) {
    std::cerr << "tprosshy: " << socket.string() << ": " << e.code().message() << "\n";
    const int v = e.code().value();
    return v == EACCES || v == EPERM ? ex::noperm : ex::unavailable;
  }
}

// A run, step by step: listen, start the profiles, wait for their first verdicts, install
// the ruleset, serve until a signal, stop.
// Completes when the helper is gone: it never speaks unasked, so its socket turning readable
// between requests means it closed (and the ruleset went with it).
asio::awaitable<void> helper_gone(asio::posix::stream_descriptor& watch) {
  for (;;) {
    co_await watch.async_wait(asio::posix::descriptor_base::wait_read, use_awaitable);
    char b;
    const auto n = ::recv(watch.native_handle(), &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    co_return;
  }
}

asio::awaitable<int> serve(runtime::runtime& rt, asio::signal_set& signals,
                           asio::posix::stream_descriptor& helper, const notifier& notify,
                           int verbose) {
  using namespace asio::experimental::awaitable_operators;
  std::optional<control::server> ctl;
  std::optional<control::metrics_server> metrics;
  auto stopped = [&](int code) -> asio::awaitable<int> {
    notify.stopping();
    if (ctl) ctl->stop();
    if (metrics) metrics->stop();
    co_await rt.stop();
    co_return code;
  };
  auto summary = [&rt] {
    std::string retrying;
    for (auto* p : rt.down()) retrying += (retrying.empty() ? "; retrying " : ", ") + p->name();
    return fmt::format(
        "{}/{} profiles up, TCP on port {}{}{}", rt.up(), rt.enabled(), rt.tcp_port(),
        rt.dns_port() ? ", DNS on port " + std::to_string(*rt.dns_port()) : "", retrying);
  };
  // Every reload, from SIGHUP or the control socket, tells systemd it is reloading.
  auto apply = [&](std::filesystem::path file) -> asio::awaitable<runtime::runtime::reload_result> {
    notify.reloading();
    auto r = co_await rt.reload(std::move(file));
    if (r.code == 0) set_log_level(rt.config().log_level, verbose);
    notify.ready(summary());
    co_return r;
  };
  int failed = 0;
  try {
    rt.listen();
  } catch (const runtime::listen_error& e) {
    spdlog::error("{}", e.what());
    failed = ex::oserr;
  }
  if (failed) co_return co_await stopped(failed);
  try {
    ctl.emplace(co_await asio::this_coro::executor, rt.config().control_socket,
                control::handlers{[&rt] { return rt.status(); },
                                  [&](std::string file) -> asio::awaitable<control::reply> {
                                    auto r = co_await apply(std::filesystem::path(file));
                                    co_return control::reply{r.code, r.message + "\n"};
                                  }});
    ctl->start();
  } catch (const std::system_error& e) {
    spdlog::error("control socket {}: {}", rt.config().control_socket,
                  e.code() == std::errc::address_in_use
                      ? "another tprosshy answers there (set control.socket to run two)"
                      : e.what());
    failed = ex::oserr;
  }
  if (failed) co_return co_await stopped(failed);
  if (const auto& m = rt.config().metrics_listen) {
    try {
      metrics.emplace(co_await asio::this_coro::executor,
                      asio::ip::tcp::endpoint(m->address, *m->port),
                      [&rt] { return control::render_prometheus(rt.status()); });
      metrics->start();
    } catch (const boost::system::system_error& e) {
      spdlog::error("cannot listen for metrics on {}: {}", m->to_string(), e.code().message());
      failed = ex::oserr;
    }
  }
  if (failed) co_return co_await stopped(failed);
  // The kill switch stands before any ssh starts. The main table comes with it: its DNS
  // redirect is how the lookups of tprosshy and of its ssh get through a lock left by a
  // crash, and traffic of a profile not up yet is refused either way.
  if (rt.config().lockdown) {
    try {
      rt.install();
      spdlog::info("lockdown: table inet {} refuses the routed destinations until a clean stop",
                   nft::lock_table);
    } catch (const std::system_error& e) {
      spdlog::error("cannot install the nftables ruleset: {}", e.what());
      failed = e.code().value() == EPERM ? ex::noperm : ex::oserr;
    }
  }
  if (failed) co_return co_await stopped(failed);
  rt.start();
  notify.status("starting: connecting to the ssh servers");

  // SIGHUP reloads (once ready: one that comes earlier is kept for then); SIGINT and
  // SIGTERM stop, and so does the helper's end: no running on without a ruleset.
  bool reload_pending = false;
  int stop_code = ex::ok;
  auto signal = [&]() -> asio::awaitable<int> {
    auto r = co_await (signals.async_wait(use_awaitable) || helper_gone(helper));
    if (r.index() == 1) {
      spdlog::critical(
          "the helper is gone (its ruleset with it): stopping rather than run "
          "without one");
      stop_code = ex::unavailable;
      co_return SIGTERM;
    }
    const int sig = std::get<0>(r);
    if (sig == SIGHUP) {
      reload_pending = true;
      co_return sig;
    }
    spdlog::info("signal {}: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
    co_return sig;
  };
  auto stop_signal = [&]() -> asio::awaitable<int> {
    for (;;)
      if (const int sig = co_await signal(); sig != SIGHUP) co_return sig;
  };
  auto reload = [&]() -> asio::awaitable<void> {
    spdlog::info("SIGHUP: reloading {}", rt.config().file.string());
    co_await apply(rt.config().file);
  };
  if ((co_await (rt.first_verdicts() || stop_signal())).index() == 1)
    co_return co_await stopped(stop_code);
  if (rt.up() == 0 && rt.config().on_start_failure == config::start_failure::exit) {
    for (auto* p : rt.down())
      spdlog::error("[{}] cannot connect to {}: {}", p->name(), p->settings().host,
                    p->last_error());
    spdlog::error("no profile's tunnel came up; exiting (on_start_failure: retry keeps trying)");
    co_return co_await stopped(ex::unavailable);
  }
  if ((co_await (rt.nameservers_known(10s) || stop_signal())).index() == 1)
    co_return co_await stopped(stop_code);

  try {
    rt.install();
  } catch (const std::system_error& e) {
    spdlog::error("cannot install the nftables ruleset: {}", e.what());
    failed = e.code().value() == EPERM ? ex::noperm : ex::oserr;
  }
  if (failed) co_return co_await stopped(failed);
  spdlog::info("ready: {}", summary());
  notify.ready("ready: " + summary());
  if (reload_pending) asio::co_spawn(co_await asio::this_coro::executor, reload(), asio::detached);
  while (co_await signal() == SIGHUP)
    asio::co_spawn(co_await asio::this_coro::executor, reload(), asio::detached);
  co_return co_await stopped(stop_code);
}

// The helper as runtime's kernel: every change of the ruleset goes through it.
class helper_kernel final : public runtime::kernel {
 public:
  explicit helper_kernel(helper::client c) : c_(std::move(c)), lifeline_(c_.lifeline()) {}
  void install(const nft::ruleset& r) override { c_.install(r); }
  void learn(const std::string& profile, const net::address& a, std::chrono::seconds ttl,
             std::optional<net::address> forget) override {
    c_.learn(profile, a, ttl, forget);
  }
  void remove() override { c_.remove(); }
  std::map<std::string, std::uint64_t> refused() override { return c_.refused(); }
  bool confined() const override { return ::geteuid() != 0; }
  int own_socket(int family, int type) override { return c_.marked_socket(family, type).release(); }
  int lifeline() const override { return lifeline_.get(); }
  int fd() const { return c_.native_handle(); }

 private:
  helper::client c_;
  net::unique_fd lifeline_;
};

constexpr const char* no_helper_text =
    "a tprosshy not run by root installs its ruleset through the helper, and none could be "
    "reached. Either join the group that may use the helper's socket (as root: systemctl "
    "enable --now tprosshy-helper.socket; adduser $USER tprosshy; then log in again), or allow "
    "sudo to start it (tprosshy helper --sudoers prints the line for /etc/sudoers.d/), or run "
    "tprosshy as root";

// A user's way to the helper: its socket, else `sudo tprosshy helper --stdio` when there is a
// terminal to ask the password on.
std::optional<helper::client> reach_helper(const config::config& cfg, std::string& why) {
  try {
    return helper::client::connect(cfg.helper_socket);
  } catch (const std::system_error& e) {
    why = cfg.helper_socket + ": " + e.code().message();
  }
  if (::isatty(STDIN_FILENO) || ::isatty(STDERR_FILENO)) {
    std::cerr << "tprosshy: the helper's socket " << why << "; asking sudo to start one\n";
    try {
      return sudo_helper();
    } catch (const std::system_error& e) {
      why += "; sudo tprosshy helper --stdio: " + std::string(e.what());
    }
  }
  return std::nullopt;
}

// What one of the lock's sets held, in words.
std::string lock_set_text(const std::string& set, std::size_t n) {
  auto count = [n](const char* one, const char* many) {
    return std::to_string(n) + " " + (n == 1 ? one : many);
  };
  const auto family = set.find('6') != std::string::npos ? "IPv6" : "IPv4";
  if (set.starts_with("route"))
    return set.substr(7) + ": " + count("routed range", "routed ranges") + " (" + family + ")";
  if (set.starts_with("learn"))
    return set.substr(7) + ": " + count("learned address", "learned addresses") + " (" + family +
           ")";
  if (set.starts_with("resolvers"))
    return std::string("DNS to ") + count("resolver", "resolvers") + " (" + family + ")";
  if (set.starts_with("exclude"))
    return count("excluded range", "excluded ranges") + " let through (" + family + ")";
  return set + ": " + count("element", "elements");
}

// Removes the lock a crashed run left, unless a live tprosshy holds the main table (and so
// the lock): what it held, or nothing when there was no lock to remove. Throws `busy`
// naming the holder.
struct busy : std::runtime_error {
  using std::runtime_error::runtime_error;
};
std::optional<nft::netlink::table_info> drop_stale_lock(nft::netlink& nl) {
  auto lock = nl.describe(nft::lock_table);
  if (!lock.exists) return std::nullopt;
  const auto main = nl.describe("tprosshy");
  if (main.exists && main.owned)
    throw busy("a tprosshy is running (its helper, netlink port " + std::to_string(main.owner) +
               ", holds table inet tprosshy) and keeps the lock");
  nl.drop(nft::lock_table);
  return lock;
}

// `tprosshy unlock`: the kill switch a crashed tprosshy left, removed, saying what it held.
int unlock() {
  if (::geteuid() != 0) {
    std::cerr << "tprosshy unlock: must run as root (it removes table inet " << nft::lock_table
              << ")\n";
    return ex::noperm;
  }
  try {
    nft::netlink nl;
    const auto lock = drop_stale_lock(nl);
    if (!lock) {
      std::cout << "no table inet " << nft::lock_table << ": nothing to remove\n";
      return ex::ok;
    }
    std::cout << "removed table inet " << nft::lock_table
              << "; routed traffic goes direct again. It refused:\n";
    for (const auto& [set, n] : lock->sets) std::cout << "  " << lock_set_text(set, n) << "\n";
    if (lock->sets.empty()) std::cout << "  nothing (it held no sets)\n";
    for (const auto& [profile, n] : lock->refused)
      std::cout << "  " << profile << ": " << n << " packets refused since it was put in\n";
    return ex::ok;
  } catch (const busy& e) {
    std::cerr << "tprosshy unlock: " << e.what()
              << ": stop it (SIGTERM removes both tables) or reload it with lockdown: false\n";
    return ex::tempfail;
  } catch (const std::system_error& e) {
    std::cerr << "tprosshy unlock: " << e.what() << "\n";
    return e.code().value() == EPERM ? ex::noperm : ex::oserr;
  }
}

int run(const cli& c) {
  // `sudo tprosshy -c FILE` with FILE the user's: the root half is the helper, the rest
  // becomes the user before it reads any file, so the config never acts as root.
  std::optional<helper::client> helper;
  bool no_agent = false;
  if (auto u = sudo_user(); u && owned_by(c.config, *u)) {
    no_agent = !std::getenv("SSH_AUTH_SOCK");
    try {
      helper = helper_for(*u);
      become(*u);
    } catch (const std::system_error& e) {
      std::cerr << "tprosshy: cannot run as " << u->name << ": " << e.what() << "\n";
      return ex::oserr;
    }
  }
  auto cfg = config::load(c.config);
  setup_logging(cfg.log_level, c.verbose);
  if (no_agent)
    spdlog::info(
        "running as {} for sudo, without an ssh agent: sudo drops SSH_AUTH_SOCK; pass it with "
        "sudo --preserve-env=SSH_AUTH_SOCK (sudoers: Defaults env_keep += SSH_AUTH_SOCK)",
        std::getenv("USER") ? std::getenv("USER") : "the user");
  const bool root = ::geteuid() == 0;
  if (root) {
    if (auto why = config::unsafe_file(cfg)) {
      std::cerr << "tprosshy: " << *why << "\n";
      return ex::config;
    }
  } else if (cfg.mode == config::run_mode::gateway) {
    std::cerr << "tprosshy: " << cfg.file.string()
              << ": mode: gateway routes other hosts' traffic and needs a root tprosshy (run it "
                 "as root, e.g. the tprosshy service)\n";
    return ex::noperm;
  } else if (cfg.lockdown) {
    std::cerr << "tprosshy: " << cfg.lockdown_at.to_string()
              << ": lockdown: its table outlives every process, so only a root tprosshy keeps "
                 "one (its own helper installs it); run tprosshy as root, e.g. the tprosshy "
                 "service, or set lockdown: false\n";
    return ex::noperm;
  }
  if (!cfg.ssh_user.empty()) {
    const auto as = runtime::ssh_account(cfg);
    if (as && !root) {
      const auto self = tunnel::account_by_uid(::geteuid());
      std::cerr << "tprosshy: " << cfg.ssh_user_at.to_string() << ": ssh_user: running ssh as "
                << cfg.ssh_user << " needs a root tprosshy (this one runs as "
                << (self ? self->name : std::to_string(::geteuid())) << ")\n";
      return ex::config;
    }
    if (const auto missing = missing_for_ssh_user(); as && !missing.empty()) {
      std::cerr << "tprosshy: " << cfg.ssh_user_at.to_string() << ": ssh_user: running ssh as "
                << cfg.ssh_user << " needs " << missing
                << " (the tprosshy unit grants them; a container needs --cap-add)\n";
      return ex::noperm;
    }
  }
  if (tunnel::find_ssh().empty()) {
    std::cerr << "tprosshy: ssh is not installed (no 'ssh' in PATH)\n";
    return ex::unavailable;
  }
  raise_fd_limit();
  std::signal(SIGPIPE, SIG_IGN);
  if (!helper) {
    if (root && !has_net_admin()) {
      std::cerr << "tprosshy: needs CAP_NET_ADMIN to install its nftables rules\n";
      return ex::noperm;
    }
    try {
      if (root) {
        helper = helper::client::spawn();
      } else {
        std::string why;
        helper = reach_helper(cfg, why);
        if (!helper) {
          std::cerr << "tprosshy: " << why << "\ntprosshy: " << no_helper_text << "\n";
          return ex::noperm;
        }
      }
    } catch (const std::system_error& e) {
      std::cerr << "tprosshy: cannot start the helper: " << e.what() << "\n";
      return e.code().value() == EPERM ? ex::noperm : ex::oserr;
    }
  }
  // A lock a crashed run left: with lockdown off it goes now (it would refuse this run's
  // own lookups of its ssh servers until the ruleset is in); with lockdown on, its learned
  // addresses carry over to this run, and its replacement takes its place at the install.
  std::map<std::string, std::vector<nft::learned_address>> adopted;
  if (root) {
    try {
      nft::netlink nl;
      if (!cfg.lockdown) {
        if (const auto lock = drop_stale_lock(nl))
          spdlog::warn("removed table inet {}, which a run with lockdown left (lockdown is off)",
                       nft::lock_table);
      } else if (const auto main = nl.describe("tprosshy"); !main.owned) {
        adopted = nl.describe(nft::lock_table).learned;
      }
    } catch (const std::exception& e) {
      spdlog::warn("cannot read table inet {}: {}", nft::lock_table, e.what());
    }
  }
  helper_kernel kernel(std::move(*helper));
  // One io_context, one thread: every part of the runtime lives on it, unlocked.
  asio::io_context io(1);
  asio::signal_set signals(io, SIGINT, SIGTERM, SIGHUP);
  unblock_signals();
  runtime::runtime rt(io.get_executor(), std::move(cfg), kernel);
  if (const auto n = rt.adopt(adopted))
    spdlog::info("lockdown: {} learned addresses of the crashed run's lock routed again", n);
  const auto notify = notifier::from_environment();
  // A duplicate of the helper's socket to wait on (the client's calls stay blocking).
  asio::posix::stream_descriptor watch(io, ::dup(kernel.fd()));
  auto supervised = [&]() -> asio::awaitable<int> {
    using namespace asio::experimental::awaitable_operators;
    if (!notify.watchdog_interval())
      co_return co_await serve(rt, signals, watch, notify, c.verbose);
    // The watchdog pings until the run ends (with an interval, it never ends by itself).
    auto r = co_await (serve(rt, signals, watch, notify, c.verbose) || notify.watchdog());
    co_return r.index() == 0 ? std::get<0>(r) : ex::software;
  };
  int code = ex::software;
  asio::co_spawn(io, supervised(), [&](std::exception_ptr e, int rc) {
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
  const auto blocked = stop_signals();
  ::sigprocmask(SIG_BLOCK, &blocked, nullptr);
  int code = ex::ok;
  auto c = parse_cli(argc, argv, code);
  if (!c) return code;
  try {
    // Under sudo, a user's file is read as that user (a run splits off its helper first).
    if (auto u = sudo_user(); u && c->what != verb::run && c->what != verb::helper &&
                              c->what != verb::unlock && owned_by(c->config, *u))
      become(*u);
    switch (c->what) {
      case verb::check:
        return check(*c);
      case verb::reload:
      case verb::status:
        return ask(*c);
      case verb::keyscan:
        return keyscan(*c);
      case verb::helper:
        if (c->sudoers) {
          std::cout << sudoers_line() << "\n";
          return ex::ok;
        }
        return helper::serve(c->helper);
      case verb::unlock:
        return unlock();
      case verb::run:
        break;
    }
    return run(*c);
  } catch (const config::error& e) {
    std::cerr << e.what() << "\n";
    return ex::config;
  } catch (const config::unreadable& e) {
    std::cerr << "tprosshy: " << c->config << ": " << e.code().message() << "\n";
    return ex::noinput;
  } catch (const std::system_error& e) {
    // Not the config's fault: say what failed, as what it is.
    std::cerr << "tprosshy: " << e.what() << "\n";
    return ex::oserr;
  } catch (const std::exception& e) {
    std::cerr << "tprosshy: " << e.what() << "\n";
    return ex::software;
  }
}

}  // namespace tprosshy::app
