#include <sstream>

#include "macattn/attention.hpp"

namespace macattn {

void StepStats::add(const StepStats& o) {
  heads += o.heads;
  heads_hit += o.heads_hit;
  groups += o.groups;
  groups_all_hit += o.groups_all_hit;
  kv_tokens_read += o.kv_tokens_read;
  kv_tokens_exact += o.kv_tokens_exact;
  ring_wipes += o.ring_wipes;
}

std::string StepStats::to_string() const {
  std::ostringstream s;
  s << "heads " << heads_hit << "/" << heads << " hit, groups " << groups_all_hit << "/" << groups
    << " all-hit, kv tokens read " << kv_tokens_read << " (exact " << kv_tokens_exact << "), ring wipes "
    << ring_wipes;
  return s.str();
}

const char* backend_name(Backend backend) {
  switch (backend) {
    case Backend::reference: return "reference";
    case Backend::cpu: return "cpu";
  }
  return "invalid";
}

}  // namespace macattn
