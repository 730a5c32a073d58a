// A census of the RPCs the stub starts on its channel, by method, taken by a client
// interceptor: an account of what went over the wire that no other part of the stub
// keeps, so a test can check it (e.g. that every RTAS call went through one Session).
#pragma once

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/client_interceptor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace papr_guest {

class RpcCensus {
 public:
  struct Counts {
    uint64_t calls = 0;     // RPCs started
    uint64_t sent = 0;      // messages sent
    uint64_t received = 0;  // messages received
  };

  // A channel to `target` whose every RPC is counted here; the census must outlive it.
  // `interceptors` run after the census's own, in order.
  std::shared_ptr<grpc::Channel> Channel(
      const std::string& target, const std::shared_ptr<grpc::ChannelCredentials>& credentials,
      const grpc::ChannelArguments& arguments = grpc::ChannelArguments(),
      std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> interceptors = {});

  // {"/papr.v1.RtasService/Session":{"calls":1,"sent":9,"received":9},...}
  std::string Json() const;

  void Count(const std::string& method, uint64_t Counts::*field);

 private:
  mutable std::mutex mutex_;
  std::map<std::string, Counts> counts_;  // by full method name
};

}  // namespace papr_guest
