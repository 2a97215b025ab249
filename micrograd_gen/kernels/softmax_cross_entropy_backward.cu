// Softmax cross-entropy with integer labels, backward: the logits' gradient
// (softmax - onehot(label)) * g, per row, from the softmax the forward kernel kept.
//
// NumPy reference: micrograd_gen.cuda_kernels.softmax_cross_entropy_backward_reference; the same
// arithmetic as micrograd_gen.ops.losses.SparseSoftmaxCrossEntropy.backward.
//
// probs (rows, classes)  softmax_cross_entropy_forward's output
// labels (rows,) int64, g (rows,) the incoming gradient of each row's loss
// d (rows, classes)      written; may be probs itself (in place: the logits-sized buffer is reused)
// One thread per element; consecutive threads along a row.

template <typename T>
__device__ void softmax_cross_entropy_backward(const T* probs, const long long* __restrict__ labels,
                                               const T* __restrict__ g, T* d, long long rows,
                                               long long classes) {
    const long long total = rows * classes;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        const long long r = idx / classes;
        const T onehot = (idx - r * classes == labels[r]) ? T(1) : T(0);
        d[idx] = (probs[idx] - onehot) * g[r];
    }
}

extern "C" __global__ void softmax_cross_entropy_backward_f32(
        const float* probs, const long long* labels, const float* g, float* d, long long rows,
        long long classes) {
    softmax_cross_entropy_backward<float>(probs, labels, g, d, rows, classes);
}

extern "C" __global__ void softmax_cross_entropy_backward_f64(
        const double* probs, const long long* labels, const double* g, double* d, long long rows,
        long long classes) {
    softmax_cross_entropy_backward<double>(probs, labels, g, d, rows, classes);
}
