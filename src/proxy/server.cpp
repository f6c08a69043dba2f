#include "proxy/server.hpp"

#include <spdlog/spdlog.h>

#include <array>
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/experimental/concurrent_channel.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <csignal>
#include <exception>
#include <map>
#include <mutex>
#include <span>

#include "proxy/original_dst.hpp"
#include "proxy/relay.hpp"
#include "proxy/socks5.hpp"
#include "proxy/socks_client.hpp"

namespace tprosshy::proxy {

namespace asio = boost::asio;
using asio::as_tuple;
using asio::use_awaitable;
using boost::system::error_code;

namespace {

std::shared_ptr<spdlog::logger> logger() {
  auto l = spdlog::get("proxy");
  return l ? l : spdlog::default_logger();
}

// At most `limit` SOCKS handshakes at once per tunnel. ssh listens with a backlog of 128
// and accepts slowly while it opens thousands of channels: more connects at once than that
// overflow its queue, and the dropped SYNs wait out TCP's retry backoff (1, 3, 7, 15 s...).
class gate {
 public:
  gate(asio::any_io_executor ex, std::size_t limit) : slots_(ex, limit) {}
  asio::awaitable<void> enter() { co_await slots_.async_send(error_code{}, use_awaitable); }
  void leave() {
    slots_.try_receive([](error_code) {});
  }

 private:
  asio::experimental::concurrent_channel<void(error_code)> slots_;
};

asio::awaitable<void> sleep_for(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(use_awaitable);
}

}  // namespace

struct server::impl : std::enable_shared_from_this<impl> {
  asio::any_io_executor ex;
  router route;
  std::vector<tcp::acceptor> acceptors;
  std::vector<tcp::endpoint> endpoints;
  std::atomic<std::size_t> flows{0};
  // ssh opens channels one after another: thousands of new flows at once can queue for
  // tens of seconds behind each other on a healthy tunnel, so only a long wait means a dead one.
  std::atomic<std::chrono::milliseconds> socks_timeout{std::chrono::seconds(120)};
  std::shared_ptr<spdlog::logger> log = logger();
  std::mutex gates_mu;
  std::map<tcp::endpoint, std::shared_ptr<gate>> gates;  // by SOCKS endpoint

  std::shared_ptr<gate> gate_for(const tcp::endpoint& socks) {
    std::lock_guard lock(gates_mu);
    auto& g = gates[socks];
    if (!g) g = std::make_shared<gate>(ex, 64);
    return g;
  }

  struct flow_guard {
    std::atomic<std::size_t>& n;
    explicit flow_guard(std::atomic<std::size_t>& c) : n(c) { ++n; }
    ~flow_guard() { --n; }
  };

  asio::awaitable<void> accept_loop(tcp::acceptor& acc) {
    auto self = shared_from_this();
    const auto where = endpoint_text(acc.local_endpoint());
    for (;;) {
      // Each flow gets a strand, so it stays sequential however many threads run `ex`.
      auto [ec, client] = co_await acc.async_accept(asio::make_strand(ex), as_tuple(use_awaitable));
      if (ec == asio::error::operation_aborted || !acc.is_open()) co_return;
      if (ec) {
        // Out of fds or memory: back off instead of spinning on a full accept queue.
        log->warn("accept on {}: {}", where, ec.message());
        if (ec != asio::error::connection_aborted)
          co_await sleep_for(std::chrono::milliseconds(100));
        continue;
      }
      auto fex = client.get_executor();
      asio::co_spawn(fex, flow(self, std::move(client)), [self](std::exception_ptr e) {
        if (!e) return;
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& x) {
          self->log->error("flow ended by exception: {}", x.what());
        }
      });
    }
  }

  static asio::awaitable<void> flow(std::shared_ptr<impl> self, tcp::socket client) {
    using namespace asio::experimental::awaitable_operators;
    flow_guard guard(self->flows);
    auto& log = *self->log;
    error_code ec;
    const auto peer = client.remote_endpoint(ec);
    const auto local = client.local_endpoint(ec);
    const auto original = original_dst(client, ec);
    // Only redirected flows are relayed: anything else connected to the listener itself.
    if (!original || *original == local) {
      log.info("refusing {}: not a redirected flow ({})", endpoint_text(peer),
               original ? "addressed to the listener" : ec.message());
      reset(client);
      co_return;
    }
    std::optional<proxy::route> r;
    try {
      r = self->route(*original);
    } catch (const std::exception& e) {
      log.error("router failed for {}: {}", endpoint_text(*original), e.what());
    }
    if (!r) {
      log.debug("{} -> {}: no route or tunnel down, reset", endpoint_text(peer),
                endpoint_text(*original));
      reset(client);
      co_return;
    }
    client.set_option(tcp::no_delay(true), ec);

    // Most clients speak first, right behind their handshake: waiting a moment for those
    // bytes lets them ride along with the CONNECT and saves the request a round trip
    // through ssh. A server-speaks-first protocol loses only this moment.
    if (client.available(ec) == 0)
      co_await (client.async_wait(tcp::socket::wait_read, as_tuple(use_awaitable)) ||
                sleep_for(std::chrono::milliseconds(2)));
    auto g = self->gate_for(r->socks);
    co_await g->enter();
    std::array<std::uint8_t, 16384> early_buf;
    std::size_t early = 0;
    if (client.available(ec) > 0) early = client.read_some(asio::buffer(early_buf), ec);
    tcp::socket up(client.get_executor());
    auto outcome = co_await (socks_connect(up, r->socks, *original, {early_buf.data(), early}) ||
                             sleep_for(self->socks_timeout.load()));
    g->leave();
    std::string why = outcome.index() == 0 ? std::get<0>(outcome) : "SOCKS setup timed out";
    if (!why.empty()) {
      log.info("{}: {} -> {}: {}, reset", r->profile, endpoint_text(peer), endpoint_text(*original),
               why);
      reset(client);
      reset(up);
      co_return;
    }
    log.debug("{}: {} -> {} relaying", r->profile, endpoint_text(peer), endpoint_text(*original));
    const auto res = co_await relay(client, up);
    if (res.error)
      log.debug("{}: {} -> {} reset after {}/{} bytes: {}", r->profile, endpoint_text(peer),
                endpoint_text(*original), res.a_to_b, res.b_to_a, res.error.message());
    else
      log.debug("{}: {} -> {} closed after {}/{} bytes", r->profile, endpoint_text(peer),
                endpoint_text(*original), res.a_to_b, res.b_to_a);
  }
};

server::server(asio::any_io_executor ex, const std::vector<tcp::endpoint>& listen, router r)
    : impl_(std::make_shared<impl>()) {
  // splice(2) into a socket the peer has reset raises SIGPIPE (it cannot pass MSG_NOSIGNAL);
  // a relay must survive that.
  std::signal(SIGPIPE, SIG_IGN);
  impl_->ex = ex;
  impl_->route = std::move(r);
  std::uint16_t port = 0;
  for (auto ep : listen) {
    tcp::acceptor acc(ex);
    acc.open(ep.protocol());
    acc.set_option(tcp::acceptor::reuse_address(true));
    if (ep.address().is_v6()) acc.set_option(asio::ip::v6_only(true));
    if (ep.port() == 0) ep.port(port);
    acc.bind(ep);
    acc.listen(asio::socket_base::max_listen_connections);
    if (port == 0) port = acc.local_endpoint().port();
    impl_->endpoints.push_back(acc.local_endpoint());
    impl_->acceptors.push_back(std::move(acc));
  }
}

server::~server() { stop(); }

std::vector<tcp::endpoint> server::local_endpoints() const { return impl_->endpoints; }

uint16_t server::port() const {
  return impl_->endpoints.empty() ? 0 : impl_->endpoints.front().port();
}

void server::start() {
  for (auto& acc : impl_->acceptors)
    asio::co_spawn(impl_->ex, impl_->accept_loop(acc), asio::detached);
}

void server::stop() {
  // Acceptors belong to the executor's thread; closing them there cancels the accepts.
  asio::dispatch(impl_->ex, [self = impl_] {
    for (auto& acc : self->acceptors) {
      error_code ignored;
      acc.close(ignored);
    }
  });
}

std::size_t server::active_flows() const { return impl_->flows.load(); }

void server::set_socks_timeout(std::chrono::milliseconds t) { impl_->socks_timeout = t; }

}  // namespace tprosshy::proxy
