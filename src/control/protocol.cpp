#include "control/protocol.hpp"

#include <algorithm>
#include <charconv>
#include <filesystem>

namespace tprosshy::control {

namespace {

bool has_control_char(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

}  // namespace

request parse_request(std::string_view line) {
  if (line.ends_with('\r')) line.remove_suffix(1);
  if (line.size() > max_request)
    throw bad_request("request longer than " + std::to_string(max_request) + " bytes");
  if (has_control_char(line)) throw bad_request("request has control characters");
  if (line == "status") return {request::verb::status, {}};
  if (line == "status json") return {request::verb::status_json, {}};
  if (line.starts_with("reload ")) {
    auto path = line.substr(7);
    if (!path.starts_with('/')) throw bad_request("reload needs an absolute path");
    return {request::verb::reload, std::string(path)};
  }
  if (line == "reload") throw bad_request("reload needs an absolute path");
  auto shown = std::string(line.substr(0, 40)) + (line.size() > 40 ? "..." : "");
  throw bad_request("unknown request '" + shown + "' (status, status json, reload PATH)");
}

std::string reload_line(std::string_view config) {
  const auto path = std::filesystem::absolute(std::filesystem::path(config)).string();
  auto line = "reload " + path;
  if (has_control_char(path)) throw bad_request("the config path has control characters");
  if (line.size() > max_request) throw bad_request("the config path is too long");
  return line;
}

std::string encode(const reply& r) { return std::to_string(r.code) + "\n" + r.text; }

reply decode(std::string_view wire) {
  const auto nl = wire.find('\n');
  reply r;
  const auto digits = wire.substr(0, nl);
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), r.code);
  if (nl == std::string_view::npos || digits.empty() || ec != std::errc() ||
      end != digits.data() + digits.size() || r.code < 0 || r.code > 255)
    throw bad_request("not a reply");
  r.text = wire.substr(nl + 1);
  return r;
}

}  // namespace tprosshy::control
