#pragma once
// Name lookups that never share an execution context with process spawning.
//
// Asio runs getaddrinfo on a helper thread owned by the resolver service of the I/O
// object's execution context. Boost.Process v2 calls notify_fork(fork_prepare) on the
// spawning executor's context at every spawn, which stops and joins that helper thread;
// a lookup queued at that moment then waits until some later lookup starts a new thread.
// These lookups run on a context of their own, which nothing ever forks from, and resume
// the caller on its own executor.
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <string>
#include <vector>

namespace tprosshy::net {

// Resolves host and port (numeric or a service name); distinct endpoints in the order
// getaddrinfo gave them. Throws boost::system::system_error on failure.
boost::asio::awaitable<std::vector<boost::asio::ip::tcp::endpoint>> resolve(std::string host,
                                                                            std::string port);

}  // namespace tprosshy::net
