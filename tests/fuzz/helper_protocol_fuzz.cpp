// libFuzzer target: arbitrary bytes through the helper's decoders, as a hostile caller
// would send them. What decodes must encode back to what decodes the same. Build and run
// with scripts/fuzz.
#include <cstddef>
#include <cstdint>
#include <span>

#include "helper/protocol.hpp"

using namespace tprosshy::helper;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> in(data, size);
  if (size >= 4) {
    try {
      (void)frame_length(std::span<const std::uint8_t, 4>(data, 4));
    } catch (const bad_message&) {
    }
  }
  try {
    const auto r = decode_request(in);
    const auto again = encode(r);
    if (decode_request(std::span(again).subspan(4)) != r) __builtin_trap();
  } catch (const bad_message&) {
  }
  try {
    const auto r = decode_reply(in);
    const auto again = encode(r);
    if (decode_reply(std::span(again).subspan(4)) != r) __builtin_trap();
  } catch (const bad_message&) {
  }
  return 0;
}
