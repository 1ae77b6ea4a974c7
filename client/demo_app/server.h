// One ktls-demo-app worker: a subscription to the agent and an epoll loop serving HTTP/1.1 on the
// connections it hands over. See server.cc for the loop's rules.
#ifndef KTLS_CLIENT_DEMO_APP_SERVER_H_
#define KTLS_CLIENT_DEMO_APP_SERVER_H_

#include <functional>

#include "options.h"

namespace ktls::demo {

// Runs until SIGTERM or SIGINT, which the caller must have blocked (the worker reads them from a
// signalfd). `static_dir_fd` is the --static_dir directory or -1. `on_first_subscribed` runs once,
// when the first subscription succeeds. Returns the process exit code.
int RunWorker(const Options& options, int worker_index, int static_dir_fd,
              std::function<void()> on_first_subscribed);

}  // namespace ktls::demo

#endif  // KTLS_CLIENT_DEMO_APP_SERVER_H_
