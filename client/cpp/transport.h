// Where the guest's RTAS calls go. RtasTransport takes a batch of calls (papr.v1.RtasCall)
// and gives back one result per call run, the way RtasService.ExecuteBatch and Session
// define it; RtasSession sends each batch as one message of an RtasService.Session
// stream, UnaryRtas makes one unary RPC per RTAS call (the stub's --unary).
//
// A call answered "call again" is called again here, as Linux's rtas_busy_delay() loops
// do it around every RTAS call of the DLPAR code: busy (-2) at once, extended delay
// (9900 + n) after 10^n ms clamped to [1 ms, 1 s]; after kMaxRetries the last status stands.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "papr/v1/rtas.grpc.pb.h"

namespace papr_guest {

// rets[0] of a result: its status (a walk's is its last call's).
int32_t ResultStatus(const papr::v1::RtasResult& result);

// Calls again of one call answered "call again" before its status stands (papr_emu_client's
// RetryPolicy.max_retries; Linux itself never gives up).
inline constexpr int kMaxRetries = 10000;

// How long to wait before calling again after `status`: busy (-2) at once, extended delay
// 9900 + n 10^n ms clamped to [1 ms, 1000 ms] (Linux's rtas_busy_delay()); nullopt when
// `status` is not "call again".
std::optional<std::chrono::milliseconds> RetryDelay(int32_t status);

class RtasTransport {
 public:
  struct Stats {
    uint64_t rpcs = 0;           // RtasService RPCs started
    uint64_t batches = 0;        // batches sent (for a session, its messages; a retry is one)
    uint64_t batched_calls = 0;  // RtasCalls in them (a walk counts one)
    uint64_t walks = 0;          // configure-connector walks run
    uint64_t rtas_calls = 0;     // RTAS calls made (a walk's every call)
    uint64_t retries = 0;        // calls made again after busy or extended delay
  };

  virtual ~RtasTransport() = default;

  // Runs `calls` (at least one) in order: one result per call run, of the call's kind.
  // With stop_at_nonzero the first call whose status is not 0 is the last one run.
  // A call answered busy or extended delay is called again (after its delay) until it is
  // not, and its result is the last answer; with stop_at_nonzero that happens before the
  // calls after it run (as a batch of their own), without it they ran already. A walk's
  // result holds its calls but the ones answered "call again".
  // Throws RpcFailure, or Failure if the answer does not match the calls.
  std::vector<papr::v1::RtasResult> Run(std::vector<papr::v1::RtasCall> calls, bool stop_at_nonzero);
  // Ends the transport cleanly (a session: half-close, then the server's OK status).
  virtual void Close() {}

  virtual const char* Name() const = 0;
  const Stats& stats() const { return stats_; }
  // {"transport":"session","rpcs":1,...}
  std::string Json() const;

 protected:
  virtual std::vector<papr::v1::RtasResult> Send(std::vector<papr::v1::RtasCall>& calls, bool stop_at_nonzero) = 0;
  Stats stats_;

 private:
  // One batch sent as it is, its answer checked against the calls.
  std::vector<papr::v1::RtasResult> Exchange(std::vector<papr::v1::RtasCall> calls, bool stop_at_nonzero);
  // `call`, answered `result`, called again until the answer is not "call again".
  papr::v1::RtasResult CallAgain(papr::v1::RtasCall call, papr::v1::RtasResult result);
};

// One RtasService.Session for the whole run, opened at the first batch: one request per
// batch, read back on a thread so that every wait for a response is bounded.
class RtasSession final : public RtasTransport {
 public:
  RtasSession(papr::v1::RtasService::Stub& stub, std::string platform);
  ~RtasSession() override;
  RtasSession(const RtasSession&) = delete;
  RtasSession& operator=(const RtasSession&) = delete;

  void Close() override;
  const char* Name() const override { return "session"; }

 private:
  std::vector<papr::v1::RtasResult> Send(std::vector<papr::v1::RtasCall>& calls, bool stop_at_nonzero) override;
  void Open();
  void ReadLoop();
  // The next response, bounded by kRpcDeadline; throws once the stream has ended.
  papr::v1::SessionResponse Next();
  // Cancels the stream (unless it has ended) and collects its status.
  grpc::Status End(bool cancel);

  papr::v1::RtasService::Stub& stub_;
  std::string platform_;
  grpc::ClientContext context_;  // outlives stream_ and reader_ (declared first)
  std::unique_ptr<grpc::ClientReaderWriter<papr::v1::SessionRequest, papr::v1::SessionResponse>> stream_;
  std::thread reader_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<papr::v1::SessionResponse> queue_;
  bool read_ended_ = false;  // Read returned false
  bool finished_ = false;    // Finish was called
  grpc::Status status_;
};

// Every RTAS call as its own unary RPC; a walk is the guest's loop of ConfigureConnector
// calls, and stop_at_nonzero is applied here.
class UnaryRtas final : public RtasTransport {
 public:
  UnaryRtas(papr::v1::RtasService::Stub& stub, std::string platform) : stub_(stub), platform_(std::move(platform)) {}
  const char* Name() const override { return "unary"; }

 private:
  std::vector<papr::v1::RtasResult> Send(std::vector<papr::v1::RtasCall>& calls, bool stop_at_nonzero) override;
  papr::v1::RtasResult One(papr::v1::RtasCall& call);

  papr::v1::RtasService::Stub& stub_;
  std::string platform_;
};

}  // namespace papr_guest
