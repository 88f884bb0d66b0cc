// macattn/error.hpp: the one exception type every public function throws on bad input.
#pragma once

#include <stdexcept>
#include <string>

namespace macattn {

/// Thrown by every public function whose inputs fail validation. The message names the
/// function, the bad argument and its value, e.g.
/// "mac_decode: q_post is null" or "MacConfig: tau = nan, must be in [0, 1)".
class Error : public std::invalid_argument {
 public:
  explicit Error(const std::string& what) : std::invalid_argument(what) {}
};

}  // namespace macattn
