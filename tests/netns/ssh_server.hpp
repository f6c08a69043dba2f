#pragma once
// A real OpenSSH server for netns tests, in a network namespace of its own (tpt-<pid>)
// joined to the test's namespace by a veth pair:
//
//   test namespace 198.18.98.1 ── 198.18.98.2 server namespace (sshd on :22)
//                  fd00:98::1  ── fd00:98::2  and its "targets" 198.18.99.5, fd00:99::5
//
// The targets are local addresses of the server namespace, so what sshd connects to for a
// channel is a socket a test opened there (listen_in_server). Keys and configs live in a
// temporary directory; the destructor stops sshd and deletes the namespace.
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace tprosshy::testing {

class ssh_server {
 public:
  ssh_server() {
    ns_ = "tpt-" + std::to_string(::getpid());
    char tmpl[] = "/tmp/tprosshy-test.XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp");
    dir_ = tmpl;
    run("ip netns del " + ns_ + " 2>/dev/null; ip netns add " + ns_);
    run("ip link add tpt0 type veth peer name tpt1 netns " + ns_);
    run("ip addr add 198.18.98.1/24 dev tpt0 && ip -6 addr add fd00:98::1/64 dev tpt0 nodad && "
        "ip link set tpt0 up");
    in_ns(
        "ip link set lo up && ip addr add 198.18.98.2/24 dev tpt1 && "
        "ip -6 addr add fd00:98::2/64 dev tpt1 nodad && ip link set tpt1 up && "
        "ip addr add 198.18.99.5/32 dev lo && ip -6 addr add fd00:99::5/128 dev lo");
    // Only the ssh server is reachable directly; 198.18.99.0/24 answers through it alone.
    run("ip route add 198.18.99.0/24 via 198.18.98.2 && ip -6 route add fd00:99::/64 via "
        "fd00:98::2");
    const auto d = dir_.string();
    run("ssh-keygen -q -t ed25519 -N '' -f " + d + "/host && ssh-keygen -q -t ed25519 -N '' -f " +
        d + "/id && cp " + d + "/id.pub " + d + "/authorized_keys && mkdir -p /run/sshd");
    write(d + "/sshd_config", "ListenAddress 198.18.98.2\nListenAddress fd00:98::2\nHostKey " + d +
                                  "/host\nPidFile " + d + "/sshd.pid\nAuthorizedKeysFile " + d +
                                  "/authorized_keys\nPermitRootLogin prohibit-password\n"
                                  "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                                  "UsePAM no\nStrictModes no\nAllowTcpForwarding yes\n"
                                  "PrintMotd no\nMaxStartups 1000:30:2000\nMaxSessions 100\n");
    std::ifstream hk(d + "/host.pub");
    std::string type, key;
    hk >> type >> key;
    write(d + "/known_hosts", "198.18.98.2 " + type + " " + key + "\n");
    write(d + "/ssh_config",
          "Host srv\n  HostName 198.18.98.2\nHost *\n  User root\n"
          "  IdentityFile " +
              d +
              "/id\n  IdentitiesOnly yes\n"
              "  UserKnownHostsFile " +
              d +
              "/known_hosts\n"
              "  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n"
              "  ConnectTimeout 3\n  LogLevel ERROR\n");
    sshd_ = ::fork();
    if (sshd_ == 0) {
      enter();
      ::execl("/usr/sbin/sshd", "/usr/sbin/sshd", "-D", "-f", (d + "/sshd_config").c_str(), "-E",
              (d + "/sshd.log").c_str(), nullptr);
      ::_exit(127);
    }
    // Ready when the server's port takes connections.
    for (int i = 0; i < 500; ++i) {
      boost::asio::io_context io;
      boost::asio::ip::tcp::socket s(io);
      boost::system::error_code ec;
      s.connect({boost::asio::ip::make_address("198.18.98.2"), 22}, ec);
      if (!ec) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    throw std::runtime_error("sshd did not start");
  }

  ~ssh_server() {
    if (sshd_ > 0) {
      ::kill(sshd_, SIGTERM);
      ::waitpid(sshd_, nullptr, 0);
    }
    // sshd's per-connection children live in the namespace too.
    std::system(("ip netns pids " + ns_ +
                 " 2>/dev/null | xargs -r kill -9; ip link del tpt0 "
                 "2>/dev/null; ip netns del " +
                 ns_ + " 2>/dev/null")
                    .c_str());
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  // ssh arguments that reach this server as destination "srv".
  std::vector<std::string> ssh_args() const { return {"-F", (dir_ / "ssh_config").string()}; }
  std::string destination() const { return "srv"; }
  const std::filesystem::path& dir() const { return dir_; }

  // Runs f with this thread in the server's namespace: sockets it opens stay there.
  template <class F>
  auto in_server(F f) {
    const int self = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    enter();
    struct back {
      int fd;
      ~back() {
        ::setns(fd, CLONE_NEWNET);
        ::close(fd);
      }
    } restore{self};
    return f();
  }

  // A shell command in the server's namespace.
  void in_ns(const std::string& cmd) const { run("ip netns exec " + ns_ + " sh -c '" + cmd + "'"); }

 private:
  static void run(const std::string& cmd) {
    if (std::system(cmd.c_str()) != 0) throw std::runtime_error("failed: " + cmd);
  }
  static void write(const std::string& path, const std::string& text) {
    std::ofstream(path) << text;
    ::chmod(path.c_str(), 0600);
  }
  void enter() const {
    const int fd = ::open(("/run/netns/" + ns_).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || ::setns(fd, CLONE_NEWNET) != 0) throw std::runtime_error("setns " + ns_);
    ::close(fd);
  }

  std::string ns_;
  std::filesystem::path dir_;
  pid_t sshd_ = -1;
};

}  // namespace tprosshy::testing
