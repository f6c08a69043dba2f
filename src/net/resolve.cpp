#include "net/resolve.hpp"

#include <algorithm>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace tprosshy::net {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

asio::thread_pool& lookups() {
  static asio::thread_pool pool(1);
  return pool;
}

}  // namespace

asio::awaitable<std::vector<tcp::endpoint>> resolve(std::string host, std::string port) {
  // The resolver's service (and its getaddrinfo thread) belong to the pool's context; the
  // completion resumes this coroutine on the caller's executor.
  tcp::resolver resolver(lookups().get_executor());
  auto results = co_await resolver.async_resolve(host, port, asio::use_awaitable);
  std::vector<tcp::endpoint> out;
  for (auto& r : results)
    if (std::find(out.begin(), out.end(), r.endpoint()) == out.end()) out.push_back(r.endpoint());
  co_return out;
}

}  // namespace tprosshy::net
