#pragma once
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>
#include <cstddef>
#include <list>
#include <utility>

namespace tprosshy::tunnel {

// A limit on holders at once for coroutines on one thread, first come first served: a
// freed slot passes straight to the next waiter, and a waiter that is cancelled (a timed-out
// setup) leaves the queue or passes on the slot it was handed. Caps a master's pending
// connects below its accept queue. An urgent waiter (a health probe) goes to the head of
// the queue: a probe measures ssh, not how many flows are waiting for it.
class gate {
 public:
  // Slots held now (for tests and status).
  std::size_t held() const { return held_; }

  gate(boost::asio::any_io_executor ex, std::size_t limit) : ex_(std::move(ex)), free_(limit) {}

  class slot {
   public:
    explicit slot(gate* g) : g_(g) {}
    slot(slot&& o) noexcept : g_(std::exchange(o.g_, nullptr)) {}
    slot& operator=(slot&&) = delete;
    ~slot() {
      if (g_) g_->leave();
    }

   private:
    gate* g_;
  };

  boost::asio::awaitable<slot> enter(bool urgent = false) {
    if (free_ > 0 && waiting_.empty()) {
      --free_;
      ++held_;
      co_return slot(this);
    }
    waiter w{boost::asio::steady_timer(ex_, boost::asio::steady_timer::time_point::max())};
    const auto at = waiting_.insert(urgent ? waiting_.begin() : waiting_.end(), &w);
    // Cancelled while queued: leave the queue, or pass on a slot handed over meanwhile.
    struct unqueue {
      gate& g;
      waiter& w;
      std::list<waiter*>::iterator at;
      bool taken = false;
      ~unqueue() {
        if (taken) return;
        if (w.handed)
          g.leave();
        else
          g.waiting_.erase(at);
      }
    } guard{*this, w, at};
    co_await w.wake.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
    if (!w.handed) throw boost::system::system_error(boost::asio::error::operation_aborted);
    guard.taken = true;
    co_return slot(this);
  }

 private:
  struct waiter {
    boost::asio::steady_timer wake;
    bool handed = false;
  };

  void leave() {
    if (waiting_.empty()) {
      ++free_;
      --held_;
      return;
    }
    auto* w = waiting_.front();
    waiting_.pop_front();
    w->handed = true;
    w->wake.cancel();
  }

  boost::asio::any_io_executor ex_;
  std::size_t free_;
  std::size_t held_ = 0;
  std::list<waiter*> waiting_;
};

}  // namespace tprosshy::tunnel
