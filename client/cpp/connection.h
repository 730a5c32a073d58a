// How the stub reaches the server: the target, TLS (server CA; a client certificate for
// mTLS) and bearer tokens, from command-line options and the environment variables every
// papr-emu client reads (PAPR_EMU_HOST, PAPR_EMU_CA, PAPR_EMU_CERT, PAPR_EMU_KEY,
// PAPR_EMU_TOKEN, PAPR_EMU_SERVER_NAME; and the stub's own PAPR_EMU_MANAGER_TOKEN).
//
// The stub plays both sides: the guest (RtasService, InterruptService, GuestService) and
// the management (HotplugService: plug, unplug, GetDevice, WatchEvents). A guest token may
// not call HotplugService, so it takes two tokens: the guest token, sent on every RPC but
// HotplugService's, and a manager token, sent on HotplugService's (the guest token there
// too if no manager token is given: an admin token alone does for everything). A client
// interceptor adds `authorization: Bearer <token>` to each RPC's metadata by its method;
// it works on every transport, TLS or (to a local server) plaintext. Tokens are never printed.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "census.h"

namespace papr_guest {

// A usage error: main() prints the message and the usage, and exits 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct ConnectionOptions {
  std::string target;         // host:port or unix:PATH
  bool tls = false;           // TLS, with ca_file's CA or else the system's
  std::string ca_file;        // PEM: the CA the server's certificate must chain to
  std::string cert_file;      // PEM: the client certificate (mTLS), with key_file
  std::string key_file;       // PEM: its private key
  std::string server_name;    // the name the server's certificate must carry, if not the target's host
  std::string guest_token;    // secret: every RPC but HotplugService's
  std::string manager_token;  // secret: HotplugService's RPCs (guest_token if empty)

  // Options override the environment; every file named is read here (UsageError if it
  // cannot be). `flag` is the option without its value ("--ca"), `value` its value.
  // Returns false if `flag` is not a connection option.
  bool Set(const std::string& flag, const std::string& value);
  // The environment's settings for what no option set; then checks the combination.
  void Finish();

  // "TLS (mTLS), tokens: guest+manager" or "plaintext, no token": no secrets, no paths.
  std::string Describe() const;

 private:
  bool target_set_ = false, ca_set_ = false, cert_set_ = false, key_set_ = false, server_name_set_ = false,
       guest_token_set_ = false, manager_token_set_ = false;
};

// The connection options, as the usage text shows them.
extern const char* const kConnectionUsage;

// A channel with those credentials, every RPC counted by `census` (which must outlive it).
std::shared_ptr<grpc::Channel> Connect(const ConnectionOptions& options, RpcCensus& census);

// Waits until the channel is ready (up to kRpcDeadline); otherwise throws a Failure that
// says why in gRPC's words (connection refused, the server's certificate not trusted, ...).
void WaitUntilConnected(const std::shared_ptr<grpc::Channel>& channel, const ConnectionOptions& options);

}  // namespace papr_guest
