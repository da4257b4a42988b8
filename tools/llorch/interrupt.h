// Ctrl-C during a streamed call: cancel the call instead of dying mid-stream,
// so the server learns at once that nobody reads (and frees the job), the
// partial output ends cleanly, and then die of SIGINT as before, so shells
// and scripts still see an interrupted process (status 130).
#ifndef LLORCH_TOOLS_LLORCH_INTERRUPT_H_
#define LLORCH_TOOLS_LLORCH_INTERRUPT_H_

#include <signal.h>

#include <atomic>
#include <thread>

#include <grpcpp/grpcpp.h>

namespace llorch {
namespace tool {

// While alive, the first SIGINT cancels `context` (a second one kills as
// usual). Destroy it before `context`. One at a time per process.
class CancelOnInterrupt {
 public:
  explicit CancelOnInterrupt(grpc::ClientContext* context);
  ~CancelOnInterrupt();
  CancelOnInterrupt(const CancelOnInterrupt&) = delete;
  CancelOnInterrupt& operator=(const CancelOnInterrupt&) = delete;

  // After the interrupted call ended: flushes stdout and dies of SIGINT.
  void RaiseIfInterrupted();

 private:
  void Watch();

  grpc::ClientContext* const context_;
  int pipe_[2] = {-1, -1};  // the handler's byte wakes Watch (a self-pipe)
  struct sigaction previous_ = {};
  std::atomic<bool> interrupted_{false};
  std::thread watcher_;
};

}  // namespace tool
}  // namespace llorch

#endif  // LLORCH_TOOLS_LLORCH_INTERRUPT_H_
