// gRPC plumbing: unary calls with a deadline, and server streams read on a thread
// so that every wait for a message is bounded.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "common.h"

namespace papr_guest {

// Every unary RPC and every wait for a streamed message is bounded by this.
inline constexpr std::chrono::seconds kRpcDeadline{10};
// Backstop for a whole stream (and so for the whole run); each read is bounded by
// kRpcDeadline on its own.
inline constexpr std::chrono::seconds kStreamDeadline{60};

// "NOT_FOUND: platform: 'x': no such platform"
std::string StatusText(const grpc::Status& status);

// An RPC that ended with a status other than OK.
class RpcFailure : public Failure {
 public:
  RpcFailure(const std::string& rpc, const grpc::Status& status)
      : Failure(rpc + " failed: " + StatusText(status)), code_(status.error_code()) {}
  grpc::StatusCode code() const { return code_; }

 private:
  grpc::StatusCode code_;
};

// Runs one unary RPC with a kRpcDeadline deadline: `call(context, response)` must invoke
// the stub method. Returns the response; throws RpcFailure on any status but OK.
template <typename Response, typename Call>
Response Unary(const std::string& rpc, Call&& call) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kRpcDeadline);
  Response response;
  const grpc::Status status = std::forward<Call>(call)(&context, &response);
  if (!status.ok()) throw RpcFailure(rpc, status);
  return response;
}

// A server-streaming call read on a background thread. The constructor returns once the
// server has sent its initial metadata, which both papr-emu streams send only after the
// subscription is in place: from then on no message can be missed.
template <typename Response>
class StreamWatcher {
 public:
  using Start = std::function<std::unique_ptr<grpc::ClientReader<Response>>(grpc::ClientContext*)>;

  StreamWatcher(std::string rpc, const Start& start) : rpc_(std::move(rpc)) {
    context_.set_deadline(std::chrono::system_clock::now() + kStreamDeadline);
    reader_ = start(&context_);
    thread_ = std::thread([this] { Run(); });
    std::unique_lock<std::mutex> lock(mutex_);
    const bool ready = changed_.wait_for(lock, kRpcDeadline, [this] { return subscribed_ || ended_; });
    if (!ready || !subscribed_) {
      const std::string why = ready ? StatusText(status_) : "no initial metadata within the deadline";
      lock.unlock();
      Stop();
      throw Failure(rpc_ + ": subscription failed: " + why);
    }
  }

  ~StreamWatcher() { Stop(); }
  StreamWatcher(const StreamWatcher&) = delete;
  StreamWatcher& operator=(const StreamWatcher&) = delete;

  // The next message, or nullopt if none arrives within `timeout`. Throws Failure once
  // the stream has ended and every message it carried has been taken.
  std::optional<Response> Next(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait_for(lock, timeout, [this] { return !queue_.empty() || ended_; });
    if (!queue_.empty()) {
      Response response = std::move(queue_.front());
      queue_.pop_front();
      return response;
    }
    if (ended_) throw Failure(rpc_ + " ended: " + StatusText(status_));
    return std::nullopt;
  }

  // A value of the server's initial metadata ("" if absent).
  std::string InitialMetadata(const std::string& key) const {
    const auto& metadata = context_.GetServerInitialMetadata();
    const auto found = metadata.find(key);
    return found == metadata.end() ? std::string() : std::string(found->second.data(), found->second.size());
  }

 private:
  void Run() {
    // WaitForInitialMetadata and Read block; only the context's deadline or TryCancel
    // (from Stop) ends them, which is why they run here and not on the caller's thread.
    reader_->WaitForInitialMetadata();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      subscribed_ = true;
    }
    changed_.notify_all();
    Response response;
    while (reader_->Read(&response)) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        queue_.push_back(std::move(response));
      }
      changed_.notify_all();
      response = Response();
    }
    const grpc::Status status = reader_->Finish();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      status_ = status;
      ended_ = true;
    }
    changed_.notify_all();
  }

  void Stop() {
    context_.TryCancel();
    if (thread_.joinable()) thread_.join();
  }

  std::string rpc_;
  grpc::ClientContext context_;  // outlives reader_ and thread_ (declared first)
  std::unique_ptr<grpc::ClientReader<Response>> reader_;
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable changed_;
  bool subscribed_ = false;
  bool ended_ = false;
  grpc::Status status_;
  std::deque<Response> queue_;
};

}  // namespace papr_guest
