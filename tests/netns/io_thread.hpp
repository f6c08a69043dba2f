#pragma once
// An io_context on a thread of its own, for tests whose clients block (the CLI's call(),
// curl): the servers under test live there, are made and destroyed there, and on_io()
// runs any other code of theirs there.
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <chrono>
#include <future>
#include <memory>
#include <stdexcept>
#include <thread>

namespace tprosshy::testing {

class io_thread {
 public:
  io_thread() : work_(io_.get_executor()), thread_([this] { io_.run(); }) {}
  ~io_thread() {
    work_.reset();
    io_.stop();
    thread_.join();
  }

  boost::asio::any_io_executor executor() { return io_.get_executor(); }

  // Runs f on the io thread and returns what it returns (or throws what it throws).
  template <class F>
  auto on_io(F f) -> decltype(f()) {
    auto task = std::make_shared<std::packaged_task<decltype(f())()>>(std::move(f));
    auto done = task->get_future();
    boost::asio::post(io_, [task] { (*task)(); });
    if (done.wait_for(std::chrono::seconds(30)) != std::future_status::ready)
      throw std::runtime_error("the io thread did not run a task within 30 s");
    return done.get();
  }

  // A T built on the io thread and deleted there, whenever its last owner lets go.
  template <class T, class... A>
  std::shared_ptr<T> make(A&&... args) {
    T* p = on_io([&] { return new T(std::forward<A>(args)...); });
    return std::shared_ptr<T>(p, [this](T* q) { on_io([q] { delete q; }); });
  }

 private:
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  std::thread thread_;
};

}  // namespace tprosshy::testing
