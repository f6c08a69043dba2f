#pragma once
// Answers by (name, type, class), served until their TTL runs out, with TTLs aged and the
// asker's ID. Bounded; the least recently used entry goes first.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

#include "dns/message.hpp"

namespace tprosshy::dns {

class cache {
 public:
  using clock = std::function<std::chrono::steady_clock::time_point()>;

  // capacity 0: nothing is stored.
  explicit cache(std::size_t capacity, clock now = std::chrono::steady_clock::now);

  // Stores the upstream `answer` to `q` if it carries a TTL (see cache_ttl) above 0.
  // Returns whether it did.
  bool put(const question& q, std::span<const std::uint8_t> answer);
  // The stored answer with every TTL lowered by the whole seconds since it was stored and
  // `id` set; nullopt if there is none or it has expired.
  std::optional<bytes> get(const question& q, std::uint16_t id);
  void clear();
  // Drops the answers for names `stale` says yes to (a reload that moved those names).
  void forget_if(const std::function<bool(std::string_view name)>& stale);
  std::size_t size() const { return map_.size(); }

 private:
  struct entry {
    std::string key;
    bytes answer;
    std::chrono::steady_clock::time_point stored;
    std::uint32_t ttl;
  };
  static std::string key_of(const question& q);

  std::size_t capacity_;
  clock now_;
  std::list<entry> lru_;  // front: most recently used
  std::unordered_map<std::string, std::list<entry>::iterator> map_;
};

}  // namespace tprosshy::dns
