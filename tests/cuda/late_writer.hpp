// tests/cuda/late_writer.hpp: launch_late_copy (late_writer.cu).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

/// Copies `bytes` from src to dst on `stream` about 50 us after the kernel starts; the kernel lets
/// its dependents launch at its start (griddepcontrol.launch_dependents on sm_90+).
cudaError_t launch_late_copy(const void* src, void* dst, std::size_t bytes, cudaStream_t stream);
