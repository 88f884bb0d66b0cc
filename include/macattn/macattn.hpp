// macattn/macattn.hpp: the whole public C++ API of the MAC-Attention library.
#pragma once

#include "macattn/attention.hpp"
#include "macattn/config.hpp"
#include "macattn/dtype.hpp"
#include "macattn/error.hpp"
#include "macattn/host_memory.hpp"
#include "macattn/kv_cache.hpp"
#include "macattn/mac_state.hpp"
#include "macattn/version.hpp"
