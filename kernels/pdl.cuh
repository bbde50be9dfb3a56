// Programmatic dependent launch (sm_90; no-ops unless the launch asked for it, which
// kernels/cuda_rtc.py does under SPARSEBENCH_PDL=1). A kernel calls allow_dependents() to let
// the next kernel on the stream start launching, and wait_for_inputs() before its first read
// of anything an earlier kernel of the stream may have written. Included by the NVRTC sources
// (cuda_rtc.compile_cubin puts this folder on the include path).
#pragma once

__device__ __forceinline__ void allow_dependents() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ void wait_for_inputs() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
