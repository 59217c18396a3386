/* The one-line message of the pb::Error a callable throws ("" if none), for the unit tests
 * of bad input. */
#pragma once

#include <string>

#include "reference/common/error.h"

namespace pb::test {

template <class Fn>
std::string error_of(Fn f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace pb::test
