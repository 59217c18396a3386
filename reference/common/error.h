/* Errors of the reference library.
 *
 * Bad configuration or bad input throws pb::Error carrying one human-readable line.
 * Programs catch it at the top (reference/tools, harness) and print exactly that line;
 * under MPI the harness turns it into MPI_Abort with the failing rank's message.
 */
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace pb {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
template <class... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace pb

// PB_REQUIRE(cond, "message", values...): throw pb::Error("message values...") if !cond.
#define PB_REQUIRE(cond, ...)                                    \
  do {                                                           \
    if (!(cond)) throw ::pb::Error(::pb::detail::concat(__VA_ARGS__)); \
  } while (0)
