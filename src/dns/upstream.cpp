#include "dns/upstream.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <deque>
#include <random>
#include <unordered_map>
#include <unordered_set>
#include <utility>

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

std::uint16_t random_id() {
  static thread_local std::mt19937 gen{std::random_device{}()};
  return static_cast<std::uint16_t>(gen());
}

// A socket of the server's family, marked as `o` says.
template <class Socket>
void open_marked(Socket& s, const typename Socket::protocol_type& p, const udp_options& o) {
  if (o.open) {
    const int fd = o.open(p.family(), p.type());
    try {
      s.assign(p, fd);
    } catch (...) {
      ::close(fd);
      throw;
    }
    return;
  }
  s.open(p);
  if (o.mark == 0) return;
  if (::setsockopt(s.native_handle(), SOL_SOCKET, SO_MARK, &o.mark, sizeof o.mark) != 0)
    throw boost::system::system_error(errno, boost::system::system_category(), "SO_MARK");
}

bytes frame(std::span<const std::uint8_t> msg) {
  bytes out(2 + msg.size());
  out[0] = static_cast<std::uint8_t>(msg.size() >> 8);
  out[1] = static_cast<std::uint8_t>(msg.size());
  std::copy(msg.begin(), msg.end(), out.begin() + 2);
  return out;
}

// True if `answer` answers `query`'s question (name case aside).
bool same_question(std::span<const std::uint8_t> answer, const message& query) {
  const auto a = parse(answer);
  if (!a || !a->head.qr() || a->questions.size() != 1 || query.questions.size() != 1) return false;
  const auto &qa = a->questions[0], &qq = query.questions[0];
  return qa.type == qq.type && qa.cls == qq.cls && lower(qa.name) == lower(qq.name);
}

// One query over a fresh TCP connection; for TC answers from UDP servers.
awaitable<std::optional<bytes>> ask_tcp(tcp::endpoint server, bytes q, const udp_options& o,
                                        std::chrono::milliseconds timeout) {
  auto ex = co_await asio::this_coro::executor;
  tcp::socket s(ex);
  open_marked(s, server.protocol(), o);
  asio::steady_timer t(ex);
  t.expires_after(timeout);
  // `||` waits for the first *success*, so a failure must come back as a value, not an
  // exception, or it would wait out the whole timeout.
  auto exchange = [&]() -> awaitable<std::optional<bytes>> {
    try {
      co_await s.async_connect(server, use_awaitable);
      co_await asio::async_write(s, asio::buffer(frame(q)), use_awaitable);
      std::array<std::uint8_t, 2> len;
      co_await asio::async_read(s, asio::buffer(len), use_awaitable);
      bytes a(std::size_t(len[0]) << 8 | len[1]);
      co_await asio::async_read(s, asio::buffer(a), use_awaitable);
      co_return a;
    } catch (const std::exception&) {
      co_return std::nullopt;
    }
  };
  auto r = co_await (exchange() || t.async_wait(as_tuple(use_awaitable)));
  if (r.index() == 0) co_return std::get<0>(std::move(r));
  co_return std::nullopt;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// tcp_upstream: one connection at a time, every query pipelined on it. Each query waits on
// its own timer, which the reader cancels when the answer (matched by upstream ID and
// connection) arrives, or the connection's end cancels to have the query sent again.
// Whatever happens, a query ends by its deadline.

struct tcp_upstream::impl : std::enable_shared_from_this<impl> {
  using clock = std::chrono::steady_clock;
  struct conn {
    explicit conn(link l) : sock(std::move(l.sock)), keep(std::move(l.keep)) {}
    asio::generic::stream_protocol::socket sock;
    std::shared_ptr<void> keep;
    std::deque<bytes> out;
    bool writing = false, dead = false;
    std::size_t sent = 0;
    std::unordered_set<std::uint16_t> ids;  // in flight here
  };
  struct pending {
    explicit pending(asio::any_io_executor ex) : wake(ex) {}
    asio::steady_timer wake;
    std::shared_ptr<conn> on;
    std::optional<bytes> answer;
    bool lost = false;
  };

  impl(asio::any_io_executor e, connector c, tcp_options o)
      : ex(e), connect(std::move(c)), opt(o), connected(e), next_id(random_id()) {
    connected.expires_at(asio::steady_timer::time_point::max());
  }

  asio::any_io_executor ex;
  connector connect;
  tcp_options opt;
  std::shared_ptr<conn> current;
  std::shared_ptr<conn> standby;  // opened before `current` is used up
  bool connecting = false, closed = false;
  asio::steady_timer connected;  // cancelled whenever a connect attempt ends
  std::unordered_map<std::uint16_t, std::shared_ptr<pending>> flights;
  std::uint16_t next_id;
  std::size_t made = 0;

  bool alloc(std::uint16_t& id) {
    if (flights.size() >= 60000) return false;
    do id = next_id++;
    while (flights.contains(id));
    return true;
  }

  void drop(std::shared_ptr<conn> c) {  // by value: it may be `current`, reset below
    if (c->dead) return;
    c->dead = true;
    error_code ec;
    c->sock.close(ec);
    c->keep.reset();
    if (current == c) current.reset();
    if (standby == c) standby.reset();
    for (auto id : c->ids)
      if (auto it = flights.find(id); it != flights.end() && !it->second->answer) {
        it->second->lost = true;
        it->second->wake.cancel();
      }
  }

  // The connection for the next query; waits for one to open until `deadline`, then null.
  awaitable<std::shared_ptr<conn>> get_conn(clock::time_point deadline) {
    auto self = shared_from_this();
    if (closed) co_return nullptr;
    if (current && current->sent >= opt.max_queries) {
      auto old = std::exchange(current, nullptr);  // drains: closed by its last query
      if (old->ids.empty()) drop(old);
    }
    if (!current && standby) current = std::exchange(standby, nullptr);
    if (!current) {
      if (!connecting) start_open();
      // A connect that hangs (a tunnel that hangs) counts against the query's deadline; the
      // connect itself goes on without it, bounded by connect_timeout.
      asio::steady_timer limit(ex);
      limit.expires_at(deadline);
      while (connecting && !closed && clock::now() < deadline)
        co_await (connected.async_wait(as_tuple(use_awaitable)) ||
                  limit.async_wait(as_tuple(use_awaitable)));
      if (closed) co_return nullptr;
      if (!current && standby) current = std::exchange(standby, nullptr);
      if (!current) co_return nullptr;
    }
    // dnsmasq, for one, closes a connection after 100 queries: open the next one while
    // this one still serves, so queries never wait for a reconnect through the tunnel.
    if (!standby && !connecting && current->sent + opt.max_queries / 4 >= opt.max_queries)
      start_open();
    co_return current;
  }

  // One connect attempt at a time, on its own: no query's deadline cuts it short.
  void start_open() {
    connecting = true;
    asio::co_spawn(
        ex, [self = shared_from_this()] { return self->open(); }, asio::detached);
  }

  // A new connection becomes `standby`.
  awaitable<void> open() {
    auto self = shared_from_this();
    connecting = true;
    std::shared_ptr<conn> c;
    // A failed connect must finish the race at once (`||` waits for the first success):
    // a dead tunnel or nameserver then gives SERVFAIL quickly instead of after timeouts.
    auto attempt = [this]() -> awaitable<std::optional<link>> {
      try {
        co_return co_await connect();
      } catch (const std::exception&) {
        co_return std::nullopt;
      }
    };
    asio::steady_timer t(ex);
    t.expires_after(opt.connect_timeout);
    auto r = co_await (attempt() || t.async_wait(as_tuple(use_awaitable)));
    if (r.index() == 0 && std::get<0>(r) && std::get<0>(r)->sock.is_open())
      c = std::make_shared<conn>(std::move(*std::get<0>(r)));
    connecting = false;
    if (c && closed) {
      error_code ec;
      c->sock.close(ec);
      c.reset();
    }
    if (c) {
      standby = c;
      ++made;
      asio::co_spawn(ex, read_loop(self, c), asio::detached);
    }
    connected.cancel();
  }

  static awaitable<void> read_loop(std::shared_ptr<impl> self, std::shared_ptr<conn> c) {
    for (;;) {
      std::array<std::uint8_t, 2> len;
      auto [ec, n] = co_await asio::async_read(c->sock, asio::buffer(len), as_tuple(use_awaitable));
      if (ec) break;
      bytes msg(std::size_t(len[0]) << 8 | len[1]);
      std::tie(ec, n) =
          co_await asio::async_read(c->sock, asio::buffer(msg), as_tuple(use_awaitable));
      if (ec) break;
      if (msg.size() < header_size) continue;
      const auto it = self->flights.find(get_id(msg));
      if (it == self->flights.end() || it->second->on != c || it->second->answer) continue;
      it->second->answer = std::move(msg);
      it->second->wake.cancel();
    }
    self->drop(c);
  }

  static awaitable<void> write_loop(std::shared_ptr<impl> self, std::shared_ptr<conn> c) {
    while (!c->out.empty() && !c->dead) {
      bytes batch;  // everything queued goes in one write
      for (auto& b : c->out) batch.insert(batch.end(), b.begin(), b.end());
      c->out.clear();
      auto [ec, n] =
          co_await asio::async_write(c->sock, asio::buffer(batch), as_tuple(use_awaitable));
      if (ec) {
        self->drop(c);
        break;
      }
    }
    c->writing = false;
  }

  void send(const std::shared_ptr<conn>& c, bytes framed) {
    c->out.push_back(std::move(framed));
    if (!c->writing) {
      c->writing = true;
      asio::co_spawn(ex, write_loop(shared_from_this(), c), asio::detached);
    }
  }

  awaitable<std::optional<bytes>> query(bytes q) {
    auto self = shared_from_this();
    if (q.size() < header_size || q.size() > 65535) co_return std::nullopt;
    const auto deadline = clock::now() + opt.deadline;
    const std::uint16_t orig = get_id(q);
    auto p = std::make_shared<pending>(ex);
    int timeouts = 0, losses = 0;
    while (!closed && clock::now() < deadline) {
      auto c = co_await get_conn(deadline);
      if (!c) {
        if (++losses > 2) break;
        continue;
      }
      std::uint16_t id;
      if (!alloc(id)) break;
      set_id(q, id);
      flights.emplace(id, p);
      c->ids.insert(id);
      p->on = c;
      p->lost = false;
      ++c->sent;
      send(c, frame(q));
      const auto attempt_end = clock::now() + opt.timeout;
      p->wake.expires_at(std::min(attempt_end, deadline));
      co_await p->wake.async_wait(as_tuple(use_awaitable));
      flights.erase(id);
      c->ids.erase(id);
      if (c != current && c->ids.empty()) drop(c);  // a drained, retired connection
      if (p->answer) {
        set_id(*p->answer, orig);
        co_return std::move(p->answer);
      }
      if (p->lost) {
        if (++losses > 3) break;
        continue;
      }
      // The deadline came before a whole attempt: that says nothing against the
      // connection, which keeps serving the others.
      if (deadline < attempt_end) break;
      // No answer in time: the server may have dropped it (dnsmasq does under load) or the
      // tunnel may hang, so the retry goes on a fresh connection; the rest in flight on
      // this one are sent again there.
      drop(c);
      if (++timeouts > 1) break;
    }
    co_return std::nullopt;
  }

  void close() {
    closed = true;
    if (current) drop(current);
    if (standby) drop(standby);
    for (auto& [id, p] : flights) {
      p->lost = true;
      p->wake.cancel();
    }
    connected.cancel();
  }
};

tcp_upstream::tcp_upstream(asio::any_io_executor ex, connector c, tcp_options o)
    : impl_(std::make_shared<impl>(ex, std::move(c), o)) {}

tcp_upstream::~tcp_upstream() { impl_->close(); }

awaitable<std::optional<bytes>> tcp_upstream::query(bytes q) {
  auto i = impl_;  // the query may outlive *this
  co_return co_await i->query(std::move(q));
}

std::size_t tcp_upstream::connections_made() const { return impl_->made; }
std::size_t tcp_upstream::in_flight() const { return impl_->flights.size(); }

// ---------------------------------------------------------------------------------------

udp_upstream::udp_upstream(asio::any_io_executor ex, std::vector<udp::endpoint> servers,
                           udp_options o)
    : ex_(ex), servers_(std::move(servers)), opt_(o) {}

awaitable<std::optional<bytes>> udp_upstream::query(bytes q) {
  const auto qm = parse(q);
  if (!qm || qm->questions.size() != 1 || servers_.empty()) co_return std::nullopt;
  const std::uint16_t orig = get_id(q);
  const auto servers = servers_;  // *this may change or go while we wait
  const std::size_t first = first_ % servers.size();
  for (std::size_t i = 0; i < servers.size(); ++i) {
    const auto idx = (first + i) % servers.size();
    const auto& server = servers[idx];
    try {
      // A fresh socket and ID per attempt: an off-path spoofer must guess both.
      udp::socket s(ex_);
      open_marked(s, server.protocol(), opt_);
      const std::uint16_t id = random_id();
      bytes out = q;
      set_id(out, id);
      co_await s.async_send_to(asio::buffer(out), server, use_awaitable);
      s.non_blocking(true);
      asio::steady_timer t(ex_);
      t.expires_after(opt_.timeout);
      std::optional<bytes> answer;
      while (!answer) {
        // Wait for a datagram, then read it into a buffer shared by every query: a query
        // waiting holds no 64 KiB of its own.
        auto r = co_await (s.async_wait(udp::socket::wait_read, as_tuple(use_awaitable)) ||
                           t.async_wait(as_tuple(use_awaitable)));
        if (r.index() == 1) break;
        if (std::get<0>(std::get<0>(r))) break;
        static thread_local std::array<std::uint8_t, 65535> buf;
        udp::endpoint from;
        error_code ec;
        const auto n = s.receive_from(asio::buffer(buf), from, 0, ec);
        if (ec == asio::error::would_block || ec == asio::error::try_again) continue;
        if (ec) break;
        if (from != server || n < header_size) continue;
        std::span<const std::uint8_t> got(buf.data(), n);
        if (get_id(got) != id || !same_question(got, *qm)) continue;
        answer.emplace(got.begin(), got.end());
      }
      if (!answer) continue;
      if (parse_header(*answer)->tc()) {
        if (auto full = co_await ask_tcp(tcp::endpoint(server.address(), server.port()), out, opt_,
                                         opt_.timeout);
            full && get_id(*full) == id && same_question(*full, *qm))
          answer = std::move(full);
      }
      first_ = idx;
      set_id(*answer, orig);
      co_return answer;
    } catch (const std::exception&) {
    }
  }
  co_return std::nullopt;
}

}  // namespace tprosshy::dns
