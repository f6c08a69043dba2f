#include "config/ssh_args.hpp"

#include <algorithm>
#include <cctype>
#include <optional>
#include <string_view>

namespace tprosshy::config {

namespace {

// OpenSSH 9.2: "1246ab:c:e:fgi:kl:m:no:p:qstvxAB:CD:E:F:GI:J:KL:MNO:PQ:R:S:TVw:W:XYy".
constexpr std::string_view options_with_value = "bceilmopBDEFIJLOQRSWw";

const char* forwarding = "that tprosshy does not manage; tprosshy hands every flow to ssh itself";

// Why a refused option letter is refused (a phrase whose subject is the option), or null.
std::optional<std::string> option_reason(char c) {
  switch (c) {
    case 'f':
      return "makes ssh fork into the background after logging in, out of tprosshy's "
             "supervision";
    case 'M':
      return "makes ssh a ControlMaster of its own; tprosshy already runs every tunnel as a "
             "ControlMaster on a private socket";
    case 's':
      return "asks for a remote subsystem session; tprosshy's tunnels run no remote session "
             "(-N)";
    case 'G':
      return "makes ssh print its configuration and exit without connecting";
    case 'V':
      return "makes ssh print its version and exit without connecting";
    case 'Q':
      return "makes ssh list what it supports and exit without connecting";
    case 'D':
      return std::string("opens a SOCKS port ") + forwarding;
    case 'L':
      return std::string("opens a local port forwarding ") + forwarding;
    case 'R':
      return std::string("opens a remote port forwarding ") + forwarding;
    case 'W':
      return "makes ssh forward its own input and output to one destination instead of "
             "serving tprosshy's flows";
    case 'w':
      return std::string("opens a tun device forwarding ") + forwarding;
    case 'S':
      return "sets ssh's control socket, which tprosshy sets itself (a socket in its private "
             "directory)";
    case 'O':
      return "sends a command to a running ControlMaster instead of starting a tunnel";
    default:
      return std::nullopt;
  }
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

struct setting {
  std::string key;    // lower case
  std::string value;  // the first word of the value, lower case, quotes removed
};

// An -o value read as ssh_config(5) lines are (readconf.c's strdelim): the keyword ends at
// whitespace, a quote or one '='; a quoted keyword is taken whole. Nothing if ssh would
// ignore the line.
std::optional<setting> parse_setting(std::string_view line) {
  std::size_t p = 0;
  // One leading run of whitespace, or a leading '=', is skipped.
  if (p < line.size() && (is_space(line[p]) || line[p] == '=')) {
    ++p;
    while (p < line.size() && is_space(line[p])) ++p;
  }
  std::string key;
  bool had_equals = false;
  while (p < line.size() && !is_space(line[p]) && line[p] != '=' && line[p] != '"')
    key += line[p++];
  if (p < line.size() && line[p] == '"') {
    auto close = line.find('"', p + 1);
    if (close == std::string_view::npos) return std::nullopt;  // ssh ignores the line
    key += line.substr(p + 1, close - p - 1);
    p = close + 1;
  } else if (p < line.size() && line[p] == '=') {
    had_equals = true;
    ++p;
  }
  if (key.empty()) return std::nullopt;
  while (p < line.size() && is_space(line[p])) ++p;
  if (!had_equals && p < line.size() && line[p] == '=') {
    ++p;
    while (p < line.size() && is_space(line[p])) ++p;
  }
  std::string value;
  while (p < line.size() && !is_space(line[p])) value += line[p++];
  if (value.size() >= 2 && value.front() == '"' && value.back() == '"')
    value = value.substr(1, value.size() - 2);
  return setting{lower(key), lower(value)};
}

bool is_no(const std::string& v) { return v == "no" || v == "false"; }

// Why an -o setting is refused (a phrase whose subject is the -o argument), or null.
std::optional<std::string> setting_reason(const setting& s) {
  const auto& k = s.key;
  if (k == "controlmaster")
    return "sets ControlMaster, which tprosshy sets itself (every tunnel is a ControlMaster "
           "on a private socket)";
  if (k == "controlpath")
    return "sets ControlPath, which tprosshy sets itself (a socket in its private directory)";
  if (k == "controlpersist")
    return "sets ControlPersist, which keeps the master running in the background, out of "
           "tprosshy's supervision";
  if (k == "forkafterauthentication" && !is_no(s.value))
    return "sets ForkAfterAuthentication, which makes ssh fork into the background after "
           "logging in, out of tprosshy's supervision";
  if (k == "batchmode" && is_no(s.value))
    return "turns BatchMode off, so ssh could wait for a password or a confirmation that "
           "nobody can give; tprosshy runs ssh with BatchMode=yes (log in with a key or an "
           "agent)";
  if (k == "sessiontype" && s.value != "none")
    return "sets SessionType; tprosshy's tunnels run no remote session (SessionType none, as "
           "-N)";
  if (k == "localforward") return std::string("sets LocalForward, a port forwarding ") + forwarding;
  if (k == "remoteforward")
    return std::string("sets RemoteForward, a port forwarding ") + forwarding;
  if (k == "dynamicforward") return std::string("sets DynamicForward, a SOCKS port ") + forwarding;
  if (k == "stricthostkeychecking" && (is_no(s.value) || s.value == "off"))
    return "turns host-key checking off, so whoever answers on the path to the server gets "
           "every flow; pin the server's keys in host_keys (tprosshy keyscan prints them) or "
           "put them in known_hosts";
  if (k == "tunnel" && !is_no(s.value))
    return std::string("sets Tunnel, a tun device forwarding ") + forwarding;
  return std::nullopt;
}

}  // namespace

std::vector<ssh_arg_refusal> refused_ssh_args(const std::vector<std::string>& args) {
  std::vector<ssh_arg_refusal> all, out;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    // Not an option: ssh takes the first such word as the destination and reads options
    // again after it, so keep looking. "--" ends one run of options the same way.
    if (a.size() < 2 || a[0] != '-' || a == "--") continue;
    const std::size_t at = i;
    for (std::size_t j = 1; j < a.size(); ++j) {
      char c = a[j];
      bool alone = j == 1;  // the option opens its entry, so the entry is all about it
      if (options_with_value.find(c) == std::string_view::npos) {
        if (auto why = option_reason(c)) {
          alone = alone && a.size() == 2;
          all.push_back(
              {at, "'" + a + "' " +
                       (alone ? *why : "holds -" + std::string(1, c) + ", which " + *why) +
                       "; remove it"});
        }
        continue;
      }
      // The value is the rest of this entry, or else the next entry, whatever it looks like.
      std::string value, shown = a;
      std::size_t value_at = at;
      if (j + 1 < a.size()) {
        value = a.substr(j + 1);
      } else if (i + 1 < args.size()) {
        value_at = ++i;
        value = args[i];
        shown = a + " " + value;
      } else {
        all.push_back({at, "'" + a + "' needs a value after -" + std::string(1, c) +
                               ", but it ends ssh_args (ssh would take the destination for "
                               "it)"});
        break;
      }
      if (c == 'o') {
        if (auto s = parse_setting(value))
          if (auto why = setting_reason(*s))
            all.push_back({value_at, "'" + shown + "' " + *why + "; remove it"});
      } else if (auto why = option_reason(c)) {
        all.push_back({at, "'" + shown + "' " +
                               (alone ? *why : "holds -" + std::string(1, c) + ", which " + *why) +
                               "; remove it"});
      }
      break;  // the value ends the bundle
    }
  }
  // One refusal per entry is enough ("-fM" says -f; -M is named once -f is gone).
  for (auto& r : all)
    if (out.empty() || out.back().index != r.index) out.push_back(std::move(r));
  return out;
}

}  // namespace tprosshy::config
