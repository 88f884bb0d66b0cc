// src/core/check.hpp: building the messages of macattn::Error. Internal.
#pragma once

#include <sstream>
#include <string>
#include <utility>

#include "macattn/error.hpp"

namespace macattn::detail {

/// Throws macattn::Error with the arguments streamed together: fail("mac_decode: W = ", w).
template <typename... Args>
[[noreturn]] void fail(Args&&... args) {
  std::ostringstream s;
  (s << ... << std::forward<Args>(args));
  throw Error(s.str());
}

/// fail(...) unless cond holds.
template <typename... Args>
void require(bool cond, Args&&... args) {
  if (!cond) fail(std::forward<Args>(args)...);
}

}  // namespace macattn::detail
