#pragma once
// The DNS front: UDP and TCP (length-prefixed, pipelined) on the same port. Each query is
// answered from the cache, else by the upstream of the profile whose domain suffix matches
// the name, else by the local upstream; the client's ID, question and the answer's rcode
// are kept. Every query runs on its own; none waits for another.
// Not thread-safe: use from one thread (or pass a strand as the executor).
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/udp.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dns/cache.hpp"
#include "dns/router.hpp"
#include "dns/upstream.hpp"

namespace tprosshy::dns {

struct server_options {
  std::size_t cache_size = 10000;  // answers; 0 = no cache
  cache::clock clock = std::chrono::steady_clock::now;
  std::chrono::seconds tcp_idle{30};  // a TCP client silent this long is closed
  // Receive buffer of each listening UDP socket: a client with hundreds of queries in
  // flight sends them faster than one thread reads them, and the kernel drops what does
  // not fit. SO_RCVBUFFORCE when permitted (CAP_NET_ADMIN), else SO_RCVBUF, which the
  // kernel caps at net.core.rmem_max. Never lowered.
  int udp_receive_buffer = 4 << 20;
  // Queries waiting on one upstream (a profile's, or the local one) at most; one more gets
  // SERVFAIL at once, never silence. Bounds the sockets and memory a hung upstream or a
  // flood can take, and keeps a hung profile from starving the others.
  std::size_t max_in_flight = 4096;
};

struct server_stats {
  std::uint64_t queries = 0, cache_hits = 0, upstream_errors = 0, malformed = 0;
  std::uint64_t overloaded = 0;  // answered SERVFAIL for want of room (max_in_flight)
};

// A profile's nameserver, under its name: what the server reports a query by.
struct profile_upstream {
  std::string name;
  std::shared_ptr<upstream> up;
};

class server {
 public:
  // (profile name, address, TTL in seconds) for every A/AAAA record of an answer that a
  // profile's upstream gave (cached answers are not reported again). The name is the one
  // the query went to, whatever set_profiles() did while it waited.
  using learn_fn =
      std::function<void(const std::string&, const boost::asio::ip::address&, std::uint32_t)>;

  // Binds UDP and TCP on each endpoint, all on one port: the first endpoint's, or a free
  // one if it is 0. `local` answers names no profile takes; null: those get REFUSED.
  // Throws boost::system::system_error.
  server(boost::asio::any_io_executor ex, const std::vector<boost::asio::ip::udp::endpoint>& listen,
         std::shared_ptr<upstream> local, server_options o = {});
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  // Profile upstreams, indexed by the values `r` returns (a null upstream answers
  // REFUSED). Replaces earlier ones and clears the cache. Queries in flight finish with the
  // old upstreams, and are reported under the old names.
  void set_profiles(router r, std::vector<profile_upstream> profiles);
  // The same for a reload: only the cached answers for names `stale` says yes to go.
  void set_profiles(router r, std::vector<profile_upstream> profiles,
                    const std::function<bool(std::string_view name)>& stale);
  // Called for every query answered with a question: which profile's upstream it went to
  // (nullopt: the local upstream), the rcode sent back, and whether the cache answered.
  using query_fn = std::function<void(const std::optional<std::string>&, rcode, bool cached)>;
  void on_query(query_fn f);
  void set_local(std::shared_ptr<upstream> local);
  void on_answer(learn_fn f);

  void start();  // spawns the receive and accept loops
  void stop();   // closes every socket; queries in flight are dropped
  std::uint16_t port() const;
  std::vector<boost::asio::ip::udp::endpoint> local_endpoints() const;
  server_stats stats() const;

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace tprosshy::dns
