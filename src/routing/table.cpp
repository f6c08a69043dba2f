#include "routing/table.hpp"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <deque>
#include <stdexcept>
#include <unordered_map>

namespace tprosshy::routing {

namespace {

using net::u128;

// Keys are left-aligned in 128 bits (IPv4 shifted up by 96), so both families share the
// bit arithmetic; each family still has its own trie.
u128 mask(unsigned len) { return len == 0 ? 0 : ~u128(0) << (128 - len); }

unsigned bit(u128 key, unsigned i) { return static_cast<unsigned>(key >> (127 - i)) & 1; }

unsigned common_len(u128 a, u128 b) {
  u128 x = a ^ b;
  auto hi = static_cast<std::uint64_t>(x >> 64);
  auto lo = static_cast<std::uint64_t>(x);
  return hi ? std::countl_zero(hi) : 64 + std::countl_zero(lo);
}

// A v4-mapped IPv6 destination (from a dual-stack socket) is an IPv4 destination.
net::address normalize(const net::address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped())
    return boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, a.to_v6());
  return a;
}

struct static_result {
  bool global = false;
  std::optional<profile_id> profile;
};

// Path-compressed binary trie: a node exists for every stored prefix and for every
// branching point, so a walk visits at most one node per bit of the address.
class trie {
 public:
  trie(unsigned width) : width_(width) { nodes_.push_back({}); }

  struct node {
    u128 key = 0;
    unsigned len = 0;
    int child[2] = {-1, -1};
    std::optional<profile_id> subnet;
    bool exclude = false;
    bool global = false;
    bool stored() const { return subnet || exclude || global; }
  };

  unsigned width() const { return width_; }
  u128 align(u128 native) const { return native << (128 - width_); }
  u128 native(u128 aligned) const { return aligned >> (128 - width_); }

  node& insert(const net::prefix& p) {
    if (p.length > width_) throw std::invalid_argument("prefix too long: " + p.to_string());
    unsigned len = p.length;
    u128 key = align(net::to_u128(p.network)) & mask(len);
    int cur = 0;
    for (;;) {
      if (nodes_[cur].len == len) return nodes_[cur];
      unsigned b = bit(key, nodes_[cur].len);
      int c = nodes_[cur].child[b];
      if (c < 0) {
        int leaf = add(key, len);
        nodes_[cur].child[b] = leaf;
        return nodes_[leaf];
      }
      u128 ckey = nodes_[c].key;
      unsigned clen = nodes_[c].len;
      unsigned cp = std::min({common_len(key, ckey), len, clen});
      if (cp == clen) {
        cur = c;
        continue;
      }
      if (cp == len) {  // the new prefix sits between cur and c
        int mid = add(key, len);
        nodes_[mid].child[bit(ckey, len)] = c;
        nodes_[cur].child[b] = mid;
        return nodes_[mid];
      }
      int glue = add(key & mask(cp), cp);
      int leaf = add(key, len);
      nodes_[glue].child[bit(ckey, cp)] = c;
      nodes_[glue].child[bit(key, cp)] = leaf;
      nodes_[cur].child[b] = glue;
      return nodes_[leaf];
    }
  }

  // `key` is aligned. Deeper nodes are longer prefixes, so the last hit wins.
  static_result lookup(u128 key) const {
    static_result r;
    int cur = 0;
    while (cur >= 0) {
      const node& n = nodes_[cur];
      if ((key & mask(n.len)) != n.key) break;
      r.global |= n.global;
      if (n.subnet)
        r.profile = n.subnet;
      else if (n.exclude)
        r.profile.reset();
      if (n.len == width_) break;
      cur = n.child[bit(key, n.len)];
    }
    return r;
  }

  template <class F>
  void for_each_stored(F&& f) const {
    for (const node& n : nodes_)
      if (n.stored()) f(n);
  }

 private:
  int add(u128 key, unsigned len) {
    node n;
    n.key = key;
    n.len = len;
    nodes_.push_back(n);
    return static_cast<int>(nodes_.size() - 1);
  }

  unsigned width_;
  std::vector<node> nodes_;
};

struct learned_key {
  u128 value;
  bool v6;
  friend bool operator==(const learned_key&, const learned_key&) = default;
};

struct learned_hash {
  std::size_t operator()(const learned_key& k) const {
    std::uint64_t h = static_cast<std::uint64_t>(k.value >> 64) * 0x9e3779b97f4a7c15ull;
    h ^= static_cast<std::uint64_t>(k.value) + (h << 6) + (h >> 2) + k.v6;
    return std::hash<std::uint64_t>{}(h);
  }
};

struct learned_entry {
  profile_id profile;
  clock::time_point expiry;
  std::uint64_t order;
};

learned_key key_of(const net::address& a) { return {net::to_u128(a), a.is_v6()}; }

}  // namespace

struct table::impl {
  trie v4{32};
  trie v6{128};
  std::vector<net::prefix> globals;
  std::unordered_map<learned_key, learned_entry, learned_hash> learned;
  // By profile, in learning order; an entry whose order no longer matches (refreshed,
  // moved, expired) is skipped when it comes up.
  std::unordered_map<profile_id, std::deque<std::pair<learned_key, std::uint64_t>>> queue;
  std::unordered_map<profile_id, std::size_t> count;
  std::uint64_t next = 0;

  trie& family(bool is_v6) { return is_v6 ? v6 : v4; }
  const trie& family(bool is_v6) const { return is_v6 ? v6 : v4; }
};

table::table() : impl_(std::make_unique<impl>()) {}
table::~table() = default;
table::table(table&&) noexcept = default;
table& table::operator=(table&&) noexcept = default;

void table::add_subnet(const net::prefix& p, profile_id profile) {
  impl_->family(p.network.is_v6()).insert(p).subnet = profile;
}

// Which profile an exclude belongs to does not change the lookup: the addresses go direct
// unless a longer prefix (or an equal-length subnet) claims them.
void table::add_exclude(const net::prefix& p, profile_id /*owner*/) {
  impl_->family(p.network.is_v6()).insert(p).exclude = true;
}

void table::add_global_exclude(const net::prefix& p) {
  impl_->family(p.network.is_v6()).insert(p).global = true;
  impl_->globals.push_back(p);
}

std::optional<net::address> table::learn(const net::address& a, profile_id profile,
                                         clock::time_point expiry, std::size_t limit) {
  auto& i = *impl_;
  const auto key = key_of(normalize(a));
  const auto order = i.next++;
  auto [it, inserted] = i.learned.try_emplace(key, learned_entry{profile, expiry, order});
  if (!inserted) {
    auto& e = it->second;
    if (e.profile == profile) {
      e.expiry = std::max(e.expiry, expiry);
      e.order = order;
    } else {
      --i.count[e.profile];
      e = {profile, expiry, order};
      inserted = true;
    }
  }
  auto& q = i.queue[profile];
  q.emplace_back(key, order);
  if (inserted) ++i.count[profile];
  while (i.count[profile] > limit && !q.empty()) {
    const auto [k, o] = q.front();
    q.pop_front();
    auto old = i.learned.find(k);
    if (old == i.learned.end() || old->second.order != o || old->second.profile != profile)
      continue;  // refreshed, moved or expired since
    i.learned.erase(old);
    --i.count[profile];
    return net::from_u128(k.value, !k.v6);
  }
  // Stale queue entries (refreshes) must not pile up without bound.
  if (q.size() > 2 * i.count[profile] + 64)
    std::erase_if(q, [&](const auto& entry) {
      auto e = i.learned.find(entry.first);
      return e == i.learned.end() || e->second.order != entry.second;
    });
  return std::nullopt;
}

std::size_t table::expire(clock::time_point now) {
  auto& i = *impl_;
  return std::erase_if(i.learned, [&](const auto& kv) {
    if (kv.second.expiry > now) return false;
    --i.count[kv.second.profile];
    return true;
  });
}

std::vector<table::learned_route> table::learned(clock::time_point now) const {
  std::vector<learned_route> out;
  for (const auto& [k, e] : impl_->learned)
    if (e.expiry > now)
      out.push_back({net::from_u128(k.value, !k.v6), e.profile, e.expiry, e.order});
  std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.order < b.order; });
  return out;
}

std::optional<profile_id> table::lookup(const net::address& addr, clock::time_point now) const {
  auto a = normalize(addr);
  const trie& t = impl_->family(a.is_v6());
  auto r = t.lookup(t.align(net::to_u128(a)));
  if (r.global) return std::nullopt;
  if (auto it = impl_->learned.find(key_of(a));
      it != impl_->learned.end() && it->second.expiry > now)
    return it->second.profile;
  return r.profile;
}

std::vector<range> table::ranges(bool v6) const {
  const trie& t = impl_->family(v6);
  const u128 max = t.native(~u128(0));
  // Between two consecutive boundaries no prefix starts or ends, so the lookup is constant.
  std::vector<u128> bounds{0};
  t.for_each_stored([&](const trie::node& n) {
    u128 first = t.native(n.key);
    u128 last = t.native(n.key | ~mask(n.len));
    bounds.push_back(first);
    if (last != max) bounds.push_back(last + 1);
  });
  std::sort(bounds.begin(), bounds.end());
  bounds.erase(std::unique(bounds.begin(), bounds.end()), bounds.end());

  std::vector<range> out;
  u128 out_last = 0;  // native value of out.back().last
  for (std::size_t i = 0; i < bounds.size(); ++i) {
    u128 first = bounds[i];
    u128 last = i + 1 < bounds.size() ? bounds[i + 1] - 1 : max;
    auto r = t.lookup(t.align(first));
    if (r.global || !r.profile) continue;
    if (!out.empty() && out.back().profile == *r.profile && out_last + 1 == first) {
      out.back().last = net::from_u128(last, !v6);
    } else {
      out.push_back({net::from_u128(first, !v6), net::from_u128(last, !v6), *r.profile});
    }
    out_last = last;
  }
  return out;
}

const std::vector<net::prefix>& table::global_excludes() const { return impl_->globals; }

}  // namespace tprosshy::routing
