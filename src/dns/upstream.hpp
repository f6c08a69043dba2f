#pragma once
// Where queries go: a profile's nameserver over one pipelined DNS-over-TCP connection
// (RFC 7766) through its tunnel, or this machine's nameservers over marked UDP sockets.
// Not thread-safe: use each object from one thread (or pass a strand as the executor).
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/udp.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "dns/message.hpp"

namespace tprosshy::dns {

class upstream {
 public:
  virtual ~upstream() = default;
  // Sends a whole query (any ID) and returns the answer with the query's ID, or nullopt
  // when no answer came in time (the caller answers SERVFAIL).
  virtual boost::asio::awaitable<std::optional<bytes>> query(bytes q) = 0;
};

struct tcp_options {
  // No answer this long on a connection: it is dropped (its other queries are sent again)
  // and the query is retried once on a fresh one, within `deadline`.
  std::chrono::milliseconds timeout{1200};
  // For the connector. The connect goes on when the queries waiting for it reach their
  // deadline: a connection that opens late still serves the queries after them.
  std::chrono::milliseconds connect_timeout{5000};
  // Queries sent on one connection before new ones go to a fresh one (the old one drains
  // and closes). dnsmasq closes a TCP connection after 100 queries, dropping the rest.
  std::size_t max_queries = 100;
  // The longest a query takes, whatever happens: waiting for a connection (a tunnel that
  // hangs), the retry and all; then nullopt (SERVFAIL). Below the 5 s a stub resolver
  // commonly waits, so a client gets SERVFAIL rather than its own timeout.
  std::chrono::milliseconds deadline{2500};
};

// A connected byte stream to a nameserver: a TCP socket, or one end of a socketpair that
// an ssh master relays. `keep` holds whatever must live as long as the stream.
struct link {
  boost::asio::generic::stream_protocol::socket sock;
  std::shared_ptr<void> keep;
};

class tcp_upstream : public upstream {
 public:
  // Opens a stream to the nameserver, e.g. a channel through a profile's ssh master.
  // Throws (or the socket is not open) on failure.
  using connector = std::function<boost::asio::awaitable<link>()>;

  tcp_upstream(boost::asio::any_io_executor ex, connector c, tcp_options o = {});
  ~tcp_upstream() override;  // closes the connection; pending queries get nullopt

  boost::asio::awaitable<std::optional<bytes>> query(bytes q) override;

  std::size_t connections_made() const;  // successful connector calls so far
  std::size_t in_flight() const;

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

struct udp_options {
  std::chrono::milliseconds timeout{2000};  // per server; then the next one is tried
  std::uint32_t mark = 0;                   // SO_MARK on every socket (0: none)
  // Makes each socket instead, (family, SOCK_DGRAM or SOCK_STREAM) -> descriptor, for a
  // process that may not set SO_MARK itself (the helper hands it marked ones). Throws.
  std::function<int(int, int)> open;
};

class udp_upstream : public upstream {
 public:
  // servers: e.g. parse_resolv_conf of /etc/resolv.conf, port 53. Each query gets a fresh
  // socket (random port) and ID; a TC answer is asked again over TCP, marked likewise.
  udp_upstream(boost::asio::any_io_executor ex, std::vector<boost::asio::ip::udp::endpoint> servers,
               udp_options o = {});

  boost::asio::awaitable<std::optional<bytes>> query(bytes q) override;

 private:
  boost::asio::any_io_executor ex_;
  std::vector<boost::asio::ip::udp::endpoint> servers_;
  udp_options opt_;
  std::size_t first_ = 0;  // the server that answered last
};

}  // namespace tprosshy::dns
