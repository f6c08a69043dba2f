// refused_ssh_args reads ssh_args the way ssh's getopt does and refuses what would take the
// ssh process or its forwarding out of tprosshy's hands (issue 9, point 9).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "config/ssh_args.hpp"

namespace {

using tprosshy::config::refused_ssh_args;
using args = std::vector<std::string>;

std::string show(const args& a) {
  std::string s = "[";
  for (std::size_t i = 0; i < a.size(); ++i) s += (i ? ", '" : "'") + a[i] + "'";
  return s + "]";
}

TEST(ssh_args, harmless_arguments_pass) {
  const std::vector<args> fine = {
      {},
      {"-N"},  // tprosshy passes -N itself; saying it again changes nothing
      {"-n", "-T", "-4", "-6", "-C", "-q", "-v", "-vvv", "-A", "-a", "-x", "-K", "-k", "-g"},
      {"-NnT"},
      {"-i", "~/.ssh/corp"},
      {"-i", "-f"},  // -i takes the next entry whatever it looks like: a file named -f
      {"-i-f"},      // ... or the rest of its own entry
      {"-l", "-D", "-p", "-L"},
      {"-4i", "-M"},
      {"-J", "jump.example.com"},
      {"-Jjump"},
      {"-F", "none"},
      {"-F", "/dev/null"},
      {"-E", "/tmp/ssh.log"},
      {"-o", "ProxyJump=jump"},
      {"-o", "BatchMode=yes"},
      {"-oBatchMode yes"},
      {"-o", "StdinNull=yes"},
      {"-o", "ExitOnForwardFailure=yes"},  // applies to forwardings set up at start: none
      {"-o", "SessionType=none"},          // what -N says
      {"-o", "SessionType none"},
      {"-o", "ForkAfterAuthentication=no"},
      {"-o", "Tunnel=no"},
      {"-o", "ServerAliveInterval=10"},
      {"-o", "StrictHostKeyChecking=yes"},
      {"-o", "StrictHostKeyChecking=accept-new"},  // allowed; `check` warns
      {"-o", "StrictHostKeyChecking ask"},
      {"-o", "UserKnownHostsFile=/dev/null"},  // beside a global one and strict checking
      {"-o", "ControlMasterx=yes"},            // not a keyword ssh knows: its own error, not ours
      {"-o", "\"ControlPath"},                 // ssh ignores a keyword without its closing quote
      {"-o", ""},
      {"-"},
      {"plain", "words"},
      {"-P"},  // a flag in OpenSSH 9.2 (ignored), so it takes no value
  };
  for (auto& a : fine) EXPECT_TRUE(refused_ssh_args(a).empty()) << show(a);
}

struct refused {
  args in;
  std::size_t index;
  std::string message;  // its start, up to "; remove it" when the whole is spelt out
};

void PrintTo(const refused& r, std::ostream* os) { *os << show(r.in); }

class refuses : public testing::TestWithParam<refused> {};

TEST_P(refuses, the_entry_and_why) {
  auto& c = GetParam();
  auto got = refused_ssh_args(c.in);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].index, c.index);
  EXPECT_EQ(got[0].message.substr(0, c.message.size()), c.message);
  EXPECT_TRUE(got[0].message.ends_with("; remove it") ||
              got[0].message.find("needs a value") != std::string::npos)
      << got[0].message;
}

const std::string fork_why =
    "makes ssh fork into the background after logging in, out of tprosshy's supervision; "
    "remove it";

INSTANTIATE_TEST_SUITE_P(
    table, refuses,
    testing::Values(
        // Short options, alone, bundled, and after other entries.
        refused{{"-f"}, 0, "'-f' " + fork_why},
        refused{{"-fN"}, 0, "'-fN' holds -f, which " + fork_why},
        refused{{"-4fN"}, 0, "'-4fN' holds -f, which " + fork_why},
        refused{{"-N", "-f"}, 1, "'-f' makes ssh fork"},
        refused{{"-i", "-f", "-f"}, 2, "'-f' makes ssh fork"},
        refused{{"host", "-f"}, 1, "'-f' makes ssh fork"},  // ssh reads options after it too
        refused{{"--", "-f"}, 1, "'-f' makes ssh fork"},
        refused{{"-M"},
                0,
                "'-M' makes ssh a ControlMaster of its own; tprosshy already runs every tunnel "
                "as a ControlMaster on a private socket; remove it"},
        refused{{"-MM"}, 0, "'-MM' holds -M, which makes ssh a ControlMaster"},
        refused{{"-s"}, 0, "'-s' asks for a remote subsystem session"},
        refused{{"-G"}, 0, "'-G' makes ssh print its configuration and exit without connecting"},
        refused{{"-V"}, 0, "'-V' makes ssh print its version"},
        refused{{"-Q", "cipher"}, 0, "'-Q cipher' makes ssh list what it supports"},
        // Options with a value: in the next entry, in the same entry, inside a bundle.
        refused{{"-D", "1080"},
                0,
                "'-D 1080' opens a SOCKS port that tprosshy does not manage; tprosshy hands "
                "every flow to ssh itself; remove it"},
        refused{{"-D1080"}, 0, "'-D1080' opens a SOCKS port"},
        refused{{"-4D1080"}, 0, "'-4D1080' holds -D, which opens a SOCKS port"},
        refused{{"-L", "8080:web:80"}, 0, "'-L 8080:web:80' opens a local port forwarding"},
        refused{{"-R", "9090:localhost:22"}, 0, "'-R 9090:localhost:22' opens a remote port"},
        refused{{"-W", "host:22"}, 0, "'-W host:22' makes ssh forward its own input and output"},
        refused{{"-w", "0:0"}, 0, "'-w 0:0' opens a tun device forwarding"},
        refused{{"-S", "/tmp/ctl"},
                0,
                "'-S /tmp/ctl' sets ssh's control socket, which tprosshy sets itself"},
        refused{{"-O", "exit"}, 0, "'-O exit' sends a command to a running ControlMaster"},
        // Host keys are always checked.
        refused{{"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"},
                1,
                "'-o StrictHostKeyChecking=no' turns host-key checking off, so whoever answers "
                "on the path to the server gets every flow; pin the server's keys in host_keys "
                "(tprosshy keyscan prints them) or put them in known_hosts; remove it"},
        refused{{"-oStricthostkeychecking off"}, 0, "'-oStricthostkeychecking off' turns host-key"},
        refused{{"-o", "StrictHostKeyChecking=\"false\""}, 1, "'-o StrictHostKeyChecking="},
        // -o in every form ssh takes.
        refused{{"-o", "ControlMaster=yes"},
                1,
                "'-o ControlMaster=yes' sets ControlMaster, which tprosshy sets itself (every "
                "tunnel is a ControlMaster on a private socket); remove it"},
        refused{{"-o ControlMaster=no"}, 0, "'-o ControlMaster=no' sets ControlMaster"},
        refused{{"-oControlMaster=auto"}, 0, "'-oControlMaster=auto' sets ControlMaster"},
        refused{{"-o", "controlmaster yes"}, 1, "'-o controlmaster yes' sets ControlMaster"},
        refused{{"-o", "ControlPath", "/tmp/x"}, 1, "'-o ControlPath' sets ControlPath"},
        refused{{"-o", "CONTROLPATH=/tmp/%C"}, 1, "'-o CONTROLPATH=/tmp/%C' sets ControlPath"},
        refused{{"-o", "  ControlPersist = 10m"},
                1,
                "'-o   ControlPersist = 10m' sets "
                "ControlPersist, which keeps the master"},
        refused{{"-o", "\"ControlPath\" /x"}, 1, "'-o \"ControlPath\" /x' sets ControlPath"},
        refused{{"-4o", "ControlPath=/x"}, 1, "'-4o ControlPath=/x' sets ControlPath"},
        refused{{"-o", "ForkAfterAuthentication=yes"},
                1,
                "'-o ForkAfterAuthentication=yes' sets ForkAfterAuthentication, which " + fork_why},
        refused{{"-o", "BatchMode=no"},
                1,
                "'-o BatchMode=no' turns BatchMode off, so ssh could wait for a password or a "
                "confirmation that nobody can give; tprosshy runs ssh with BatchMode=yes (log "
                "in with a key or an agent); remove it"},
        refused{{"-o", "batchmode False"}, 1, "'-o batchmode False' turns BatchMode off"},
        refused{{"-o", "SessionType=default"}, 1, "'-o SessionType=default' sets SessionType"},
        refused{{"-o", "LocalForward=8080 web:80"},
                1,
                "'-o LocalForward=8080 web:80' sets "
                "LocalForward, a port forwarding"},
        refused{{"-o", "RemoteForward 80 h:80"},
                1,
                "'-o RemoteForward 80 h:80' sets "
                "RemoteForward"},
        refused{{"-o", "DynamicForward=1080"}, 1, "'-o DynamicForward=1080' sets DynamicForward"},
        refused{{"-o", "Tunnel=point-to-point"}, 1, "'-o Tunnel=point-to-point' sets Tunnel"},
        // A value missing at the end: ssh would take the destination for it.
        refused{{"-i"},
                0,
                "'-i' needs a value after -i, but it ends ssh_args (ssh would take the "
                "destination for it)"},
        refused{{"-C", "-4o"}, 1, "'-4o' needs a value after -o"}));

TEST(ssh_args, every_refusal_in_list_order_one_per_entry) {
  auto got = refused_ssh_args({"-fM", "-i", "key", "-o", "ControlPath=x", "-D1080"});
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].index, 0u);
  EXPECT_EQ(got[0].message.substr(0, 17), "'-fM' holds -f, w");
  EXPECT_EQ(got[1].index, 4u);
  EXPECT_EQ(got[2].index, 5u);
}

}  // namespace
