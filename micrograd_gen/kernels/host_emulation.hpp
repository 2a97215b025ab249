// Compile a kernels/*.cu file for the CPU, for tests only: the same source, run by host threads.
//
//   g++ -std=c++17 -O1 -shared -fPIC -include kernels/host_emulation.hpp -x c++ kernels/X.cu
//       -o X.so -lpthread
//
// A "thread" is whatever host thread calls the kernel function after emu_set_thread(block, thread)
// set its blockIdx / threadIdx (thread-local). Kernels without __syncthreads can have their threads
// run one after another; a kernel with __syncthreads (softmax_cross_entropy_forward) needs all
// threads of a block running at once, each calling the kernel, with emu_configure(blocks,
// threads) having sized the barrier to the block. __shared__ becomes static: one copy, shared by
// the threads of the block being run, which is what shared memory is when one block runs at a
// time. tests/test_kernels.py drives this through ctypes.
#include <math.h>
#include <pthread.h>

struct emu_dim3 { unsigned int x, y, z; };
static thread_local emu_dim3 threadIdx = {0, 0, 0};
static thread_local emu_dim3 blockIdx = {0, 0, 0};
static emu_dim3 blockDim = {1, 1, 1};
static emu_dim3 gridDim = {1, 1, 1};
static pthread_barrier_t emu_barrier;
static bool emu_barrier_ready = false;

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

static inline void __syncthreads() { pthread_barrier_wait(&emu_barrier); }

extern "C" void emu_configure(unsigned int blocks, unsigned int threads) {
    gridDim.x = blocks;
    blockDim.x = threads;
    if (emu_barrier_ready) pthread_barrier_destroy(&emu_barrier);
    pthread_barrier_init(&emu_barrier, nullptr, threads);
    emu_barrier_ready = true;
}

extern "C" void emu_set_thread(unsigned int block, unsigned int thread) {
    blockIdx.x = block;
    threadIdx.x = thread;
}
