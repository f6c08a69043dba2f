// libFuzzer target: arbitrary bytes through the DNS parser and every rewrite the server
// applies to untrusted messages. Build and run with scripts/fuzz.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>

#include "dns/cache.hpp"
#include "dns/message.hpp"

using namespace tprosshy::dns;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> in(data, size);
  const auto m = parse(in);
  if (m) {
    (void)cache_ttl(*m);
    (void)udp_limit(*m);
  }
  (void)parse_header(in);
  (void)make_reply(in, rcode::formerr);
  (void)truncate(in);

  bytes copy(in.begin(), in.end());
  const bool aged = age_ttls(copy, 7);
  if (aged && (!m || !parse(copy))) __builtin_trap();  // aged: still well-formed
  if (!aged && !std::equal(copy.begin(), copy.end(), in.begin(), in.end()))
    __builtin_trap();  // else untouched
  if (strip_opt(copy) && !parse(copy)) __builtin_trap();
  copy_question(copy, in);

  // The message as a cached answer to its own question.
  if (m && m->questions.size() == 1) {
    std::chrono::steady_clock::time_point t{};
    cache c(4, [&] { return t; });
    if (c.put(m->questions[0], in)) {
      t += std::chrono::seconds(1);
      auto got = c.get(m->questions[0], 0x1234);
      if (got && (get_id(*got) != 0x1234 || !parse(*got))) __builtin_trap();
    }
  }
  return 0;
}
