#include "proxy/server.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "proxy/original_dst.hpp"

namespace tprosshy::proxy {

namespace asio = boost::asio;
using asio::as_tuple;
using asio::use_awaitable;
using boost::system::error_code;

namespace {

std::string text(const tcp::endpoint& ep) {
  return ep.address().is_v6() ? "[" + ep.address().to_string() + "]:" + std::to_string(ep.port())
                              : ep.address().to_string() + ":" + std::to_string(ep.port());
}

void reset(tcp::socket& s) {
  error_code ignored;
  s.set_option(tcp::socket::linger(true, 0), ignored);
  s.close(ignored);
}

}  // namespace

struct server::impl : std::enable_shared_from_this<impl> {
  asio::any_io_executor ex;
  router route;
  flow_done done;
  std::vector<tcp::acceptor> acceptors;
  std::vector<tcp::endpoint> endpoints;
  std::size_t flows = 0;

  asio::awaitable<void> accept_loop(tcp::acceptor& acc) {
    auto self = shared_from_this();
    const auto where = text(acc.local_endpoint());
    asio::steady_timer pause(ex);
    for (;;) {
      auto [ec, client] = co_await acc.async_accept(as_tuple(use_awaitable));
      if (ec == asio::error::operation_aborted || !acc.is_open()) co_return;
      if (ec) {
        // Out of fds or memory: back off instead of spinning on a full accept queue.
        spdlog::warn("accept on {}: {}", where, ec.message());
        if (ec != asio::error::connection_aborted) {
          pause.expires_after(std::chrono::milliseconds(100));
          co_await pause.async_wait(as_tuple(use_awaitable));
        }
        continue;
      }
      asio::co_spawn(ex, flow(self, std::move(client)), asio::detached);
    }
  }

  static asio::awaitable<void> flow(std::shared_ptr<impl> self, tcp::socket client) {
    ++self->flows;
    struct uncount {
      std::size_t& n;
      ~uncount() { --n; }
    } counted{self->flows};
    error_code ec;
    const auto peer = client.remote_endpoint(ec);
    const auto local = client.local_endpoint(ec);
    const auto original = original_dst(client, ec);
    // Only redirected flows are carried: anything else connected to the listener itself.
    if (!original || *original == local) {
      spdlog::info("refusing {}: not a redirected flow ({})", text(peer),
                   original ? "addressed to the listener" : ec.message());
      reset(client);
      co_return;
    }
    std::optional<proxy::route> r;
    try {
      r = self->route(*original);
    } catch (const std::exception& e) {
      spdlog::error("router failed for {}: {}", text(*original), e.what());
    }
    if (!r || !r->tunnel) {
      spdlog::debug("{} -> {}: no route or tunnel down, reset", text(peer), text(*original));
      reset(client);
      co_return;
    }
    // ssh reads and writes the client's socket from here on; our copy only waits for the
    // flow's end, and must not wake this process for every packet.
    net::unique_fd fd(client.release(ec));
    if (ec) {
      reset(client);
      co_return;
    }
    const auto res = co_await r->tunnel->carry(std::move(fd), *original);
    if (res.reset)
      spdlog::log(res.opened ? spdlog::level::debug : spdlog::level::info,
                  "{}: {} -> {} reset after {}/{} bytes: {}", r->profile, text(peer),
                  text(*original), res.up, res.down, res.why);
    else
      spdlog::debug("{}: {} -> {} closed after {}/{} bytes", r->profile, text(peer),
                    text(*original), res.up, res.down);
    if (self->done) self->done(*r, res);
  }
};

server::server(asio::any_io_executor ex, const std::vector<tcp::endpoint>& listen, router r,
               flow_done done)
    : impl_(std::make_shared<impl>()) {
  impl_->ex = ex;
  impl_->route = std::move(r);
  impl_->done = std::move(done);
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
  for (auto& acc : impl_->acceptors) {
    error_code ignored;
    acc.close(ignored);
  }
}

std::size_t server::active_flows() const { return impl_->flows; }

}  // namespace tprosshy::proxy
