#include "dns/cache.hpp"

namespace tprosshy::dns {

cache::cache(std::size_t capacity, clock now) : capacity_(capacity), now_(std::move(now)) {}

std::string cache::key_of(const question& q) {
  std::string k = lower(q.name);
  k.push_back('\0');
  k.push_back(static_cast<char>(q.type >> 8));
  k.push_back(static_cast<char>(q.type));
  k.push_back(static_cast<char>(q.cls >> 8));
  k.push_back(static_cast<char>(q.cls));
  return k;
}

bool cache::put(const question& q, std::span<const std::uint8_t> answer) {
  if (capacity_ == 0) return false;
  const auto m = parse(answer);
  if (!m || m->questions.size() != 1) return false;
  // Only the answer to this very question, so one asker cannot plant another's entry.
  const auto& aq = m->questions.front();
  if (aq.type != q.type || aq.cls != q.cls || lower(aq.name) != lower(q.name)) return false;
  const auto ttl = cache_ttl(*m);
  if (!ttl || *ttl == 0) return false;

  auto k = key_of(q);
  if (auto it = map_.find(k); it != map_.end()) {
    lru_.erase(it->second);
    map_.erase(it);
  }
  while (map_.size() >= capacity_) {
    map_.erase(lru_.back().key);
    lru_.pop_back();
  }
  lru_.push_front({k, bytes(answer.begin(), answer.end()), now_(), *ttl});
  map_.emplace(std::move(k), lru_.begin());
  return true;
}

std::optional<bytes> cache::get(const question& q, std::uint16_t id) {
  const auto it = map_.find(key_of(q));
  if (it == map_.end()) return std::nullopt;
  const auto e = it->second;
  const auto age = std::chrono::duration_cast<std::chrono::seconds>(now_() - e->stored).count();
  if (age < 0 || age >= e->ttl) {
    lru_.erase(e);
    map_.erase(it);
    return std::nullopt;
  }
  bytes out = e->answer;
  if (!age_ttls(out, static_cast<std::uint32_t>(age))) {
    lru_.erase(e);
    map_.erase(it);
    return std::nullopt;
  }
  lru_.splice(lru_.begin(), lru_, e);
  set_id(out, id);
  return out;
}

void cache::clear() {
  map_.clear();
  lru_.clear();
}

void cache::forget_if(const std::function<bool(std::string_view name)>& stale) {
  for (auto it = lru_.begin(); it != lru_.end();) {
    const std::string_view name(it->key.data(), it->key.find('\0'));
    if (stale(name)) {
      map_.erase(it->key);
      it = lru_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace tprosshy::dns
