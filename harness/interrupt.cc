/* Signal handling of a run (see interrupt.h). */
#include "harness/interrupt.h"

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstring>
#include <ctime>

namespace pb::harness {
namespace {

constexpr size_t kText = 1024, kFiles = 8, kPath = 4096;

// Two buffers: the context is written into the one the handler is not reading, then
// published by flipping `current` (lock-free, so safe against a signal at any point).
char g_context[2][kText];
std::atomic<int> g_current{0};
char g_files[kFiles][kPath];
size_t g_num_files = 0;
bool g_speaker = false;

void say(const char* s) {
  size_t n = std::strlen(s);
  while (n > 0) {
    const ssize_t w = ::write(STDERR_FILENO, s, n);
    if (w <= 0) return;
    s += w, n -= size_t(w);
  }
}

extern "C" void on_signal(int sig) {
  for (size_t i = 0; i < g_num_files; ++i) ::unlink(g_files[i]);
  if (g_speaker) {
    // No signal name: mpirun turns the user's SIGINT into SIGTERM for its ranks.
    say("\nparabench: interrupted ");
    say(g_context[g_current.load()]);
    say("\n");
  } else {
    // The speaking rank goes first: mpirun answers the first rank that ends by killing the
    // rest at once (SIGKILL), which could cut rank 0 off before its line and its cleanup.
    const struct timespec pause = {0, 300 * 1000 * 1000};
    ::nanosleep(&pause, nullptr);
  }
  ::_exit(128 + sig);
}

}  // namespace

void set_interrupt_context(const std::string& where) {
  const int next = 1 - g_current.load();
  const size_t n = std::min(where.size(), kText - 1);
  std::memcpy(g_context[next], where.data(), n);
  g_context[next][n] = '\0';
  g_current.store(next);
}

void install_interrupt_handlers(bool speaker, const std::vector<std::string>& remove) {
  g_speaker = speaker;
  g_num_files = 0;
  for (const auto& f : remove)
    if (!f.empty() && f.size() < kPath && g_num_files < kFiles) {
      std::memcpy(g_files[g_num_files], f.c_str(), f.size() + 1);
      ++g_num_files;
    }
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&sa.sa_mask, s);  // one handler at a time
  for (int s : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(s, &sa, nullptr);
}

}  // namespace pb::harness
