#include "tunnel/ssh.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/readable_pipe.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <charconv>
#include <sstream>
#include <stdexcept>

#include "net/resolve.hpp"
#include "tunnel/process.hpp"

namespace tprosshy::tunnel {

namespace asio = boost::asio;
using asio::use_awaitable;
using namespace asio::experimental::awaitable_operators;

namespace {

std::optional<uint16_t> to_port(std::string_view s) {
  unsigned v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || end != s.data() + s.size() || v == 0 || v > 65535) return std::nullopt;
  return static_cast<uint16_t>(v);
}

asio::awaitable<std::string> read_all(asio::readable_pipe& p) {
  std::string out;
  char buf[4096];
  for (;;) {
    auto [ec, n] = co_await p.async_read_some(asio::buffer(buf), asio::as_tuple(use_awaitable));
    out.append(buf, n);
    if (ec) co_return out;
  }
}

std::string last_line(const std::string& text) {
  auto end = text.find_last_not_of("\r\n");
  if (end == std::string::npos) return {};
  auto start = text.rfind('\n', end);
  return text.substr(start == std::string::npos ? 0 : start + 1,
                     end + 1 - (start == std::string::npos ? 0 : start + 1));
}

}  // namespace

std::string find_ssh() { return bp::environment::find_executable("ssh").string(); }

ssh_facts parse_ssh_g(const std::string& text) {
  ssh_facts f;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    auto sp = line.find(' ');
    if (sp == std::string::npos) continue;
    auto key = line.substr(0, sp);
    auto value = line.substr(sp + 1);
    if (key == "hostname") {
      f.hostname = value;
    } else if (key == "port") {
      if (auto p = to_port(value)) f.port = *p;
    } else if (key == "proxyjump" && value != "none") {
      std::string::size_type pos = 0;
      while (pos <= value.size()) {
        auto comma = value.find(',', pos);
        auto item = value.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        if (!item.empty()) f.proxy_jump.push_back(item);
        if (comma == std::string::npos) break;
        pos = comma + 1;
      }
    } else if (key == "stricthostkeychecking") {
      f.host_key_checking = value;
    } else if (key == "proxycommand" && value != "none") {
      f.proxy_command = true;
    }
  }
  return f;
}

std::optional<jump> parse_jump(const std::string& entry) {
  std::string_view s = entry;
  if (s.starts_with("ssh://")) s.remove_prefix(6);
  if (s.empty()) return std::nullopt;
  std::string user;
  if (auto at = s.rfind('@'); at != std::string_view::npos) {
    user = std::string(s.substr(0, at + 1));
    s.remove_prefix(at + 1);
  }
  jump j;
  std::string_view host = s;
  if (s.starts_with('[')) {
    auto close = s.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    host = s.substr(1, close - 1);
    auto rest = s.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':' || !(j.port = to_port(rest.substr(1)))) return std::nullopt;
    }
  } else if (auto colon = s.find(':');
             colon != std::string_view::npos && s.find(':', colon + 1) == std::string_view::npos) {
    host = s.substr(0, colon);
    if (!(j.port = to_port(s.substr(colon + 1)))) return std::nullopt;
  }
  if (host.empty()) return std::nullopt;
  j.destination = user + std::string(host);
  return j;
}

namespace {

struct output {
  int rc;
  std::string out, err;
};

asio::awaitable<output> run_ssh(const std::vector<std::string>& args, const std::string& program,
                                const std::optional<account>& as) {
  auto ex = co_await asio::this_coro::executor;
  auto ssh = bp::environment::find_executable(program).string();
  if (ssh.empty()) throw std::runtime_error(program + " is not installed (not in PATH)");
  asio::readable_pipe out(ex), err(ex);
  auto proc = launch(ex, ssh, args, bp::process_stdio{nullptr, out, err}, as);
  auto [o, e] = co_await (read_all(out) && read_all(err));
  int rc = co_await proc.async_wait(use_awaitable);
  co_return output{rc, std::move(o), std::move(e)};
}

std::string ssh_message(const std::string& err) {
  auto why = last_line(err);
  if (why.starts_with("ssh: ")) why.erase(0, 5);
  return why;
}

}  // namespace

asio::awaitable<ssh_facts> query(const std::vector<std::string>& ssh_args,
                                 const std::string& destination, std::optional<account> as) {
  std::vector<std::string> args{"-G"};
  args.insert(args.end(), ssh_args.begin(), ssh_args.end());
  args.push_back("--");
  args.push_back(destination);
  const std::string program = "ssh";
  auto r = co_await run_ssh(args, program, as);
  if (r.rc != 0) {
    auto why = ssh_message(r.err);
    throw std::runtime_error("ssh -G " + destination + " failed" + (why.empty() ? "" : ": " + why));
  }
  co_return parse_ssh_g(r.out);
}

asio::awaitable<std::vector<tcp::endpoint>> server_endpoints(
    const std::vector<std::string>& ssh_args, const std::string& destination,
    std::optional<account> as, bool pinned, std::string* checking) {
  auto facts = co_await query(ssh_args, destination, as);
  if (checking) *checking = facts.host_key_checking;
  if (!pinned && facts.host_key_checking == "false")
    throw unchecked_host_keys(
        "ssh's settings for " + destination +
        " turn host-key checking off (StrictHostKeyChecking no), so whoever answers on the "
        "path would get every flow; pin the server's keys in host_keys (tprosshy keyscan "
        "prints them), or check them (StrictHostKeyChecking yes or accept-new) against "
        "known_hosts");
  if (!facts.proxy_jump.empty()) {
    auto j = parse_jump(facts.proxy_jump.front());
    if (!j) throw std::runtime_error("cannot parse ProxyJump '" + facts.proxy_jump.front() + "'");
    std::vector<std::string> args = ssh_args;
    if (j->port) {
      args.push_back("-p");
      args.push_back(std::to_string(*j->port));
    }
    facts = co_await query(args, j->destination, as);
    facts.proxy_jump.clear();
  }
  if (facts.proxy_command) co_return std::vector<tcp::endpoint>{};
  try {
    co_return co_await net::resolve(facts.hostname, std::to_string(facts.port));
  } catch (const boost::system::system_error& e) {
    throw std::runtime_error("cannot resolve ssh server '" + facts.hostname +
                             "': " + e.code().message());
  }
}

asio::awaitable<std::vector<std::string>> keyscan(const std::string& host, uint16_t port,
                                                  std::optional<account> as) {
  // Named, not temporaries: GCC 12 miscompiles a braced list inside co_await's arguments.
  const std::vector<std::string> args{"-T", "5", "-p", std::to_string(port), host};
  const std::string program = "ssh-keyscan";
  auto r = co_await run_ssh(args, program, as);
  std::vector<std::string> keys;
  std::istringstream in(r.out);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    // "host type key", or "[host]:port type key"
    auto a = line.find(' ');
    if (a != std::string::npos) keys.push_back(line.substr(a + 1));
  }
  if (keys.empty())
    throw std::runtime_error("ssh-keyscan got no key from " + host + " port " +
                             std::to_string(port) +
                             (r.err.empty() ? "" : ": " + ssh_message(r.err)));
  co_return keys;
}

std::vector<std::string> tunnel_command(const std::vector<std::string>& ssh_args,
                                        const std::string& destination,
                                        const std::string& control_path) {
  std::vector<std::string> args{"-N", "-o", "ControlMaster=yes", "-o",
                                "ControlPath=" + control_path, "-o", "ControlPersist=no", "-o",
                                "ForkAfterAuthentication=no", "-o", "BatchMode=yes",
                                // A DynamicForward or LocalForward in the user's ssh_config
                                // would open ports for every local user.
                                "-o", "ClearAllForwardings=yes", "-o", "ServerAliveInterval=15",
                                "-o", "ServerAliveCountMax=3"};
  args.insert(args.end(), ssh_args.begin(), ssh_args.end());
  args.push_back("--");
  args.push_back(destination);
  return args;
}

}  // namespace tprosshy::tunnel
