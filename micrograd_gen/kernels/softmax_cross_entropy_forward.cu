// Softmax cross-entropy with integer labels, forward: per row, the loss and the softmax that the
// backward kernel turns into the gradient.
//
// NumPy reference: micrograd_gen.cuda_kernels.softmax_cross_entropy_forward_reference; the same
// arithmetic as micrograd_gen.ops.losses.SparseSoftmaxCrossEntropy.forward.
//
// logits (rows, classes), labels (rows,) int64 in [0, classes) (the caller checks the range)
// probs  (rows, classes)  softmax of each row, shifted by the row's maximum so exp never overflows
// loss   (rows,)          log(sum exp(z - max)) + max - z[label]: exact even where the label's
//                         probability underflows to 0 (log(probs[label]) would be -inf there)
// For a language model the logits are the step's largest array (B*99 x 15000); one block per row
// reads them twice and writes the probabilities once, where the plain CuPy expression makes five
// passes and three temporaries of that size.
// Launch: block = (XENT_BLOCK,) threads; grid = any number of blocks (rows are strided over).

#define XENT_BLOCK 256

template <typename T> __device__ __forceinline__ T exp_(T v);
template <> __device__ __forceinline__ float exp_(float v) { return expf(v); }
template <> __device__ __forceinline__ double exp_(double v) { return exp(v); }
template <typename T> __device__ __forceinline__ T log_(T v);
template <> __device__ __forceinline__ float log_(float v) { return logf(v); }
template <> __device__ __forceinline__ double log_(double v) { return log(v); }

// Tree reduction over the block; every thread gets the result. Called by all threads alike.
template <typename T, bool IS_MAX>
__device__ T block_reduce(T v, T* buf) {
    const int tid = threadIdx.x;
    buf[tid] = v;
    __syncthreads();
    for (int step = XENT_BLOCK / 2; step > 0; step >>= 1) {
        if (tid < step) {
            const T other = buf[tid + step];
            buf[tid] = IS_MAX ? (other > buf[tid] ? other : buf[tid]) : buf[tid] + other;
        }
        __syncthreads();
    }
    const T result = buf[0];
    __syncthreads();  // buf is reused by the next reduction
    return result;
}

template <typename T>
__device__ void softmax_cross_entropy_forward(const T* __restrict__ logits,
                                              const long long* __restrict__ labels,
                                              T* __restrict__ probs, T* __restrict__ loss,
                                              long long rows, long long classes) {
    __shared__ T buf[XENT_BLOCK];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* z = logits + r * classes;
        T* p = probs + r * classes;
        T peak = z[0];
        for (long long j = threadIdx.x; j < classes; j += XENT_BLOCK) peak = z[j] > peak ? z[j] : peak;
        peak = block_reduce<T, true>(peak, buf);
        T total = T(0);
        for (long long j = threadIdx.x; j < classes; j += XENT_BLOCK) {
            const T e = exp_(z[j] - peak);
            p[j] = e;
            total += e;
        }
        total = block_reduce<T, false>(total, buf);
        const T inv = T(1) / total;
        for (long long j = threadIdx.x; j < classes; j += XENT_BLOCK) p[j] *= inv;
        if (threadIdx.x == 0) loss[r] = log_(total) + peak - z[labels[r]];
    }
}

extern "C" __global__ void softmax_cross_entropy_forward_f32(
        const float* logits, const long long* labels, float* probs, float* loss, long long rows,
        long long classes) {
    softmax_cross_entropy_forward<float>(logits, labels, probs, loss, rows, classes);
}

extern "C" __global__ void softmax_cross_entropy_forward_f64(
        const double* logits, const long long* labels, double* probs, double* loss,
        long long rows, long long classes) {
    softmax_cross_entropy_forward<double>(logits, labels, probs, loss, rows, classes);
}
