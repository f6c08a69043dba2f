#include "control/metrics.hpp"

#include <spdlog/spdlog.h>

#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <optional>
#include <set>
#include <string_view>

namespace tprosshy::control {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::as_tuple;
using asio::use_awaitable;
using boost::system::error_code;
using tcp = asio::ip::tcp;

namespace {

using response = http::response<http::string_body>;

response plain(http::status code, unsigned version, bool keep_alive, std::string text) {
  response res{code, version};
  res.set(http::field::server, "tprosshy");
  res.set(http::field::content_type, "text/plain; charset=utf-8");
  res.keep_alive(keep_alive);
  res.body() = std::move(text);
  res.prepare_payload();
  return res;
}

}  // namespace

struct metrics_server::impl : std::enable_shared_from_this<impl> {
  asio::any_io_executor ex;
  tcp::acceptor acceptor;
  source text;
  metrics_limits limits;
  tcp::endpoint local;
  std::size_t connections = 0;
  std::set<beast::tcp_stream*> open;  // to close at stop()

  impl(asio::any_io_executor e) : ex(e), acceptor(e) {}

  asio::awaitable<void> accept_loop() {
    auto self = shared_from_this();
    asio::steady_timer pause(ex);
    for (;;) {
      auto [ec, sock] = co_await acceptor.async_accept(as_tuple(use_awaitable));
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
      if (ec) {
        // Out of fds: back off instead of spinning.
        spdlog::warn("metrics: accept: {}", ec.message());
        pause.expires_after(std::chrono::milliseconds(100));
        co_await pause.async_wait(as_tuple(use_awaitable));
        continue;
      }
      if (connections >= limits.connections) {
        spdlog::debug("metrics: {} connections open; closing a new one", connections);
        continue;  // the socket closes as it goes
      }
      asio::co_spawn(ex, session(self, std::move(sock)), asio::detached);
    }
  }

  response respond(const http::request<http::string_body>& req) {
    const auto target = std::string_view(req.target().data(), req.target().size());
    const auto path = target.substr(0, target.find('?'));
    const bool head = req.method() == http::verb::head;
    if (path != "/metrics")
      return plain(http::status::not_found, req.version(), req.keep_alive(),
                   "not found: the metrics are at /metrics\n");
    if (req.method() != http::verb::get && !head) {
      auto res = plain(http::status::method_not_allowed, req.version(), req.keep_alive(),
                       "method not allowed: GET or HEAD\n");
      res.set(http::field::allow, "GET, HEAD");
      return res;
    }
    std::string body;
    try {
      body = text();
    } catch (const std::exception& e) {
      spdlog::error("metrics: {}", e.what());
      return plain(http::status::internal_server_error, req.version(), false,
                   "cannot render the metrics\n");
    }
    response res{http::status::ok, req.version()};
    res.set(http::field::server, "tprosshy");
    res.set(http::field::content_type, metrics_content_type);
    res.keep_alive(req.keep_alive());
    if (head) {
      res.content_length(body.size());
    } else {
      res.body() = std::move(body);
      res.prepare_payload();
    }
    return res;
  }

  static asio::awaitable<void> session(std::shared_ptr<impl> self, tcp::socket sock) {
    beast::tcp_stream stream(std::move(sock));
    ++self->connections;
    self->open.insert(&stream);
    struct leave {
      impl& i;
      beast::tcp_stream* s;
      ~leave() {
        --i.connections;
        i.open.erase(s);
      }
    } left{*self, &stream};
    const auto& http_errors = http::make_error_code(http::error::end_of_stream).category();
    beast::flat_buffer buffer;
    bool answered = false;
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(self->limits.header_bytes));
      parser.body_limit(self->limits.body_bytes);
      stream.expires_after(self->limits.request_time);
      auto [ec, n] = co_await http::async_read(stream, buffer, parser, as_tuple(use_awaitable));
      std::optional<response> res;
      if (ec == http::error::header_limit)
        res = plain(http::status::request_header_fields_too_large, 11, false, "header too large\n");
      else if (ec == http::error::body_limit)
        res = plain(http::status::payload_too_large, 11, false, "body too large\n");
      else if (ec && ec.category() == http_errors && ec != http::error::end_of_stream &&
               ec != http::error::partial_message)
        res = plain(http::status::bad_request, 11, false, "bad request\n");
      else if (ec)
        break;  // gone, idle too long, or stopped
      else
        res = self->respond(parser.get());
      stream.expires_after(self->limits.reply_time);
      auto [wec, wn] = co_await http::async_write(stream, *res, as_tuple(use_awaitable));
      if (wec) break;
      if (!res->keep_alive()) {
        answered = true;
        break;
      }
    }
    error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
    if (answered) {
      // Closing with unread bytes would send a reset that can overtake the answer (a
      // refused header still arriving, say): read until the client closes, within bounds.
      stream.expires_after(std::chrono::seconds(1));
      std::array<char, 4096> scratch;
      for (std::size_t drained = 0; drained < (1 << 20);) {
        auto [rec, got] =
            co_await stream.async_read_some(asio::buffer(scratch), as_tuple(use_awaitable));
        if (rec) break;
        drained += got;
      }
    }
    stream.close();
  }
};

metrics_server::metrics_server(asio::any_io_executor ex, const tcp::endpoint& listen, source text,
                               metrics_limits limits)
    : impl_(std::make_shared<impl>(ex)) {
  auto& acc = impl_->acceptor;
  acc.open(listen.protocol());
  acc.set_option(tcp::acceptor::reuse_address(true));
  acc.bind(listen);
  acc.listen(asio::socket_base::max_listen_connections);
  impl_->local = acc.local_endpoint();
  impl_->text = std::move(text);
  impl_->limits = limits;
}

metrics_server::~metrics_server() { stop(); }

tcp::endpoint metrics_server::local_endpoint() const { return impl_->local; }

void metrics_server::start() { asio::co_spawn(impl_->ex, impl_->accept_loop(), asio::detached); }

void metrics_server::stop() {
  error_code ignored;
  impl_->acceptor.close(ignored);
  for (auto* s : impl_->open) s->close();
}

}  // namespace tprosshy::control
