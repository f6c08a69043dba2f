#include "dns/resolv_conf.hpp"

#include <string>

namespace tprosshy::dns {

namespace {
bool blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

std::string_view next_word(std::string_view& s) {
  std::size_t i = 0;
  while (i < s.size() && blank(s[i])) ++i;
  std::size_t j = i;
  while (j < s.size() && !blank(s[j])) ++j;
  auto w = s.substr(i, j - i);
  s.remove_prefix(j);
  return w;
}
}  // namespace

std::vector<boost::asio::ip::address> parse_resolv_conf(std::string_view text) {
  std::vector<boost::asio::ip::address> out;
  while (!text.empty()) {
    const auto nl = text.find('\n');
    auto line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    if (const auto c = line.find_first_of("#;"); c != std::string_view::npos)
      line = line.substr(0, c);
    if (next_word(line) != "nameserver") continue;
    auto addr = next_word(line);
    if (addr.empty() || !next_word(line).empty()) continue;
    if (const auto pct = addr.find('%'); pct != std::string_view::npos) addr = addr.substr(0, pct);
    boost::system::error_code ec;
    const auto a = boost::asio::ip::make_address(std::string(addr), ec);
    if (!ec) out.push_back(a);
  }
  return out;
}

}  // namespace tprosshy::dns
