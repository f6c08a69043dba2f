#include "dns/server.hpp"

#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <deque>
#include <list>
#include <unordered_map>

namespace tprosshy::dns {

namespace asio = boost::asio;
using asio::as_tuple;
using asio::awaitable;
using asio::use_awaitable;
using boost::system::error_code;
using tcp = asio::ip::tcp;
using udp = asio::ip::udp;
using namespace asio::experimental::awaitable_operators;

namespace {

std::shared_ptr<spdlog::logger> logger() {
  auto l = spdlog::get("dns");
  return l ? l : spdlog::default_logger();
}

// Raises `s`'s receive buffer to `bytes` (see server_options::udp_receive_buffer); returns
// what the kernel grants, in the same terms.
int size_receive_buffer(udp::socket& s, int bytes) {
  const int fd = s.native_handle();
  int have = 0;
  socklen_t len = sizeof have;
  // The kernel reports twice what was set (its bookkeeping overhead counts).
  if (::getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &have, &len) == 0 && have / 2 >= bytes)
    return have / 2;
  if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) != 0)
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
  len = sizeof have;
  if (::getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &have, &len) != 0) return 0;
  return have / 2;
}

// Counts one query waiting on an upstream for as long as it lives.
class in_flight_slot {
 public:
  using counts = std::unordered_map<const upstream*, std::size_t>;
  in_flight_slot(counts& c, const upstream* u) : counts_(c), up_(u) { ++counts_[up_]; }
  ~in_flight_slot() {
    if (auto it = counts_.find(up_); it != counts_.end() && --it->second == 0) counts_.erase(it);
  }
  in_flight_slot(const in_flight_slot&) = delete;
  in_flight_slot& operator=(const in_flight_slot&) = delete;

 private:
  counts& counts_;
  const upstream* up_;
};

struct tcp_client {
  explicit tcp_client(tcp::socket s) : sock(std::move(s)) {}
  tcp::socket sock;
  std::deque<bytes> out;
  bool writing = false;
};

}  // namespace

struct server::impl : std::enable_shared_from_this<impl> {
  impl(asio::any_io_executor e, std::shared_ptr<upstream> l, server_options o)
      : ex(e), local(std::move(l)), opt(std::move(o)), answers(opt.cache_size, opt.clock) {}

  asio::any_io_executor ex;
  std::shared_ptr<upstream> local;
  server_options opt;
  cache answers;
  router routes;
  std::vector<profile_upstream> profiles;
  learn_fn learn;
  query_fn counted;
  server_stats counters;
  std::vector<udp::socket> udps;
  std::vector<tcp::acceptor> acceptors;
  std::list<std::weak_ptr<tcp_client>> clients;
  in_flight_slot::counts waiting;  // queries waiting, per upstream
  std::uint16_t port = 0;
  bool stopped = false;

  void bind(const std::vector<udp::endpoint>& listen) {
    if (listen.empty()) throw std::invalid_argument("dns server: nothing to listen on");
    const bool any_port = listen.front().port() == 0;
    // With port 0 the first UDP socket picks one; another program may hold it for TCP, so
    // try a few times.
    for (int attempt = 0;; ++attempt) {
      udps.clear();
      acceptors.clear();
      try {
        std::uint16_t p = listen.front().port();
        for (const auto& e : listen) {
          udp::socket s(ex);
          s.open(e.protocol());
          if (e.address().is_v6()) s.set_option(asio::ip::v6_only(true));
          s.bind(udp::endpoint(e.address(), p));
          p = s.local_endpoint().port();
          if (const int got = size_receive_buffer(s, opt.udp_receive_buffer);
              got < opt.udp_receive_buffer)
            logger()->warn(
                "dns: UDP receive buffer on {} is {} KiB, not {} KiB (net.core.rmem_max, no "
                "CAP_NET_ADMIN): a burst of queries may be dropped",
                s.local_endpoint().address().to_string(), got / 1024,
                opt.udp_receive_buffer / 1024);
          udps.push_back(std::move(s));
        }
        for (const auto& e : listen) {
          tcp::acceptor a(ex);
          a.open(e.address().is_v6() ? tcp::v6() : tcp::v4());
          a.set_option(tcp::acceptor::reuse_address(true));
          if (e.address().is_v6()) a.set_option(asio::ip::v6_only(true));
          a.bind(tcp::endpoint(e.address(), p));
          a.listen();
          acceptors.push_back(std::move(a));
        }
        port = p;
        return;
      } catch (const boost::system::system_error& err) {
        if (!any_port || attempt >= 20 || err.code() != asio::error::address_in_use) throw;
      }
    }
  }

  // The reply to one query; empty: send nothing.
  awaitable<bytes> answer(bytes q, bool over_udp) {
    auto self = shared_from_this();
    ++counters.queries;
    std::string why;
    const auto m = parse(q, &why);
    if (!m) {
      ++counters.malformed;
      const auto h = parse_header(q);
      if (!h || h->qr()) co_return bytes{};
      logger()->debug("dns: malformed query: {}", why);
      co_return make_reply(q, rcode::formerr);
    }
    if (m->head.qr()) co_return bytes{};  // a response sent to us: never answer one
    if (m->head.opcode() != 0) co_return make_reply(q, rcode::notimp);
    if (m->questions.size() != 1) {
      ++counters.malformed;
      co_return make_reply(q, rcode::formerr);
    }
    const auto& qq = m->questions.front();
    // Taken now, by value: a reload may re-index the profiles while the query waits.
    std::optional<std::string> profile;
    std::shared_ptr<upstream> up = local;
    if (const auto id = routes.match(qq.name)) {
      profile = *id < profiles.size() ? profiles[*id].name : std::string();
      up = *id < profiles.size() ? profiles[*id].up : nullptr;
    }
    bytes reply;
    bool cached = false;
    // A reply made here rather than by an upstream, counted like any other.
    auto made = [&](rcode code) {
      if (counted) counted(profile, code, false);
      return make_reply(q, code);
    };
    if (auto hit = answers.get(qq, m->head.id)) {
      ++counters.cache_hits;
      cached = true;
      reply = std::move(*hit);
    } else {
      if (!up) co_return made(rcode::refused);
      if (auto it = waiting.find(up.get());
          it != waiting.end() && it->second >= opt.max_in_flight) {
        ++counters.overloaded;
        co_return made(rcode::servfail);
      }
      std::optional<bytes> got;
      {
        in_flight_slot slot(waiting, up.get());
        got = co_await up->query(q);
      }
      std::optional<message> am;
      if (got) am = parse(*got);
      if (!am || am->questions.size() != 1 || lower(am->questions[0].name) != lower(qq.name) ||
          am->questions[0].type != qq.type) {
        ++counters.upstream_errors;
        logger()->debug("dns: no usable answer for {} from {}", qq.name,
                        profile ? "profile " + *profile : std::string("local"));
        co_return made(rcode::servfail);
      }
      reply = std::move(*got);
      answers.put(qq, reply);
      if (profile && learn)
        for (const auto& rr : am->answers)
          if (rr.address) learn(*profile, *rr.address, rr.ttl);
    }
    copy_question(reply, q);
    if (counted)
      if (const auto h = parse_header(reply)) counted(profile, h->code(), cached);
    if (!m->edns_size) strip_opt(reply);
    if (over_udp && reply.size() > udp_limit(*m)) {
      if (auto t = truncate(reply)) reply = std::move(*t);
    }
    co_return reply;
  }

  static awaitable<void> udp_one(std::shared_ptr<impl> self, udp::socket& s, bytes q,
                                 udp::endpoint from) {
    auto reply = co_await self->answer(std::move(q), true);
    if (reply.empty() || self->stopped) co_return;
    co_await s.async_send_to(asio::buffer(reply), from, as_tuple(use_awaitable));
  }

  static awaitable<void> udp_loop(std::shared_ptr<impl> self, std::size_t i) {
    auto& s = self->udps[i];
    bytes buf(65535);
    while (!self->stopped) {
      udp::endpoint from;
      auto [ec, n] =
          co_await s.async_receive_from(asio::buffer(buf), from, as_tuple(use_awaitable));
      if (ec == asio::error::operation_aborted || self->stopped) break;
      if (ec) continue;  // e.g. ICMP errors reported on the socket
      asio::co_spawn(self->ex, udp_one(self, s, bytes(buf.begin(), buf.begin() + n), from),
                     asio::detached);
    }
  }

  static awaitable<void> tcp_write(std::shared_ptr<tcp_client> c) {
    while (!c->out.empty() && c->sock.is_open()) {
      bytes batch;
      for (auto& b : c->out) batch.insert(batch.end(), b.begin(), b.end());
      c->out.clear();
      auto [ec, n] =
          co_await asio::async_write(c->sock, asio::buffer(batch), as_tuple(use_awaitable));
      if (ec) {
        error_code ignored;
        c->sock.close(ignored);
      }
    }
    c->writing = false;
  }

  static awaitable<void> tcp_one(std::shared_ptr<impl> self, std::shared_ptr<tcp_client> c,
                                 bytes q) {
    auto reply = co_await self->answer(std::move(q), false);
    if (reply.empty() || !c->sock.is_open()) co_return;
    bytes framed(2);
    framed[0] = static_cast<std::uint8_t>(reply.size() >> 8);
    framed[1] = static_cast<std::uint8_t>(reply.size());
    framed.insert(framed.end(), reply.begin(), reply.end());
    c->out.push_back(std::move(framed));
    if (!c->writing) {
      c->writing = true;
      asio::co_spawn(self->ex, tcp_write(c), asio::detached);
    }
  }

  static awaitable<void> tcp_session(std::shared_ptr<impl> self, std::shared_ptr<tcp_client> c) {
    asio::steady_timer idle(self->ex);
    while (c->sock.is_open() && !self->stopped) {
      std::array<std::uint8_t, 2> len;
      idle.expires_after(self->opt.tcp_idle);
      auto r = co_await (asio::async_read(c->sock, asio::buffer(len), as_tuple(use_awaitable)) ||
                         idle.async_wait(as_tuple(use_awaitable)));
      if (r.index() == 1) break;
      if (std::get<0>(std::get<0>(r))) co_return;  // EOF: answers in flight still go out
      bytes q(std::size_t(len[0]) << 8 | len[1]);
      idle.expires_after(self->opt.tcp_idle);
      auto r2 = co_await (asio::async_read(c->sock, asio::buffer(q), as_tuple(use_awaitable)) ||
                          idle.async_wait(as_tuple(use_awaitable)));
      if (r2.index() == 1) break;
      if (std::get<0>(std::get<0>(r2))) co_return;
      asio::co_spawn(self->ex, tcp_one(self, c, std::move(q)), asio::detached);
    }
    error_code ec;
    c->sock.close(ec);
  }

  static awaitable<void> accept_loop(std::shared_ptr<impl> self, std::size_t i) {
    auto& a = self->acceptors[i];
    while (!self->stopped) {
      auto [ec, s] = co_await a.async_accept(as_tuple(use_awaitable));
      if (ec == asio::error::operation_aborted || self->stopped) break;
      if (ec) {
        // Out of fds and the like: back off a little rather than spin.
        asio::steady_timer t(self->ex, std::chrono::milliseconds(50));
        co_await t.async_wait(as_tuple(use_awaitable));
        continue;
      }
      auto c = std::make_shared<tcp_client>(std::move(s));
      std::erase_if(self->clients, [](auto& w) { return w.expired(); });
      self->clients.push_back(c);
      asio::co_spawn(self->ex, tcp_session(self, c), asio::detached);
    }
  }

  void stop() {
    stopped = true;
    error_code ec;
    for (auto& s : udps) s.close(ec);
    for (auto& a : acceptors) a.close(ec);
    for (auto& w : clients)
      if (auto c = w.lock()) c->sock.close(ec);
    clients.clear();
  }
};

server::server(asio::any_io_executor ex, const std::vector<udp::endpoint>& listen,
               std::shared_ptr<upstream> local, server_options o)
    : impl_(std::make_shared<impl>(ex, std::move(local), std::move(o))) {
  impl_->bind(listen);
}

server::~server() { impl_->stop(); }

void server::set_profiles(router r, std::vector<profile_upstream> profiles) {
  impl_->routes = std::move(r);
  impl_->profiles = std::move(profiles);
  impl_->answers.clear();
}

void server::set_profiles(router r, std::vector<profile_upstream> profiles,
                          const std::function<bool(std::string_view name)>& stale) {
  impl_->routes = std::move(r);
  impl_->profiles = std::move(profiles);
  impl_->answers.forget_if(stale);
}

void server::on_query(query_fn f) { impl_->counted = std::move(f); }

void server::set_local(std::shared_ptr<upstream> local) {
  impl_->local = std::move(local);
  impl_->answers.clear();
}

void server::on_answer(learn_fn f) { impl_->learn = std::move(f); }

void server::start() {
  for (std::size_t i = 0; i < impl_->udps.size(); ++i)
    asio::co_spawn(impl_->ex, impl::udp_loop(impl_, i), asio::detached);
  for (std::size_t i = 0; i < impl_->acceptors.size(); ++i)
    asio::co_spawn(impl_->ex, impl::accept_loop(impl_, i), asio::detached);
}

void server::stop() { impl_->stop(); }

std::uint16_t server::port() const { return impl_->port; }

std::vector<udp::endpoint> server::local_endpoints() const {
  std::vector<udp::endpoint> out;
  for (const auto& s : impl_->udps) {
    error_code ec;
    auto e = s.local_endpoint(ec);
    if (!ec) out.push_back(e);
  }
  return out;
}

server_stats server::stats() const { return impl_->counters; }

}  // namespace tprosshy::dns
