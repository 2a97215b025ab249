// One step of Keras's LSTM cell after its matrix products: gate activations, new cell state,
// new hidden state, in one pass (instead of a dozen elementwise kernels per time step).
//
// NumPy reference: micrograd_gen.cuda_kernels.lstm_cell_forward_reference; the same arithmetic as
// one step of micrograd_gen.ops.lstm.LSTM.forward.
//
// Gate blocks in Keras's order i, f, c, o. With z = x_t @ kernel + h_{t-1} @ recurrent + bias:
//     i, f, o = sigmoid(z_i), sigmoid(z_f), sigmoid(z_o);   g = tanh(z_c)
//     c = f * c_prev + i * g;   h = o * tanh(c)
// z may hold each block pre-multiplied by a constant, scale_k * z_k (the CPU op pre-scales its
// kernels by -1, -1, -2, -1 so that one exp serves every gate); the kernel divides it back out.
//
// Layouts, for units U and batch N (all C-contiguous):
//   feature_major = 1:  z (4U, N), element (k, u, n) at (k*U + u)*N + n;  states (U, N)
//   feature_major = 0:  z (N, 4U), element (k, u, n) at n*4U + k*U + u;    states (N, U)
// In:  z, c_prev.   Out: z overwritten with the activations (i, f, g, o), which is what the
// backward kernel reads; c, tanh_c (= tanh(c), kept for backward) and h.
// One thread per (unit, sample); each reads and writes only its own four gate values, so writing
// z in place is safe.

template <typename T> __device__ __forceinline__ T exp_(T v);
template <> __device__ __forceinline__ float exp_(float v) { return expf(v); }
template <> __device__ __forceinline__ double exp_(double v) { return exp(v); }
template <typename T> __device__ __forceinline__ T tanh_(T v);
template <> __device__ __forceinline__ float tanh_(float v) { return tanhf(v); }
template <> __device__ __forceinline__ double tanh_(double v) { return tanh(v); }

template <typename T>
__device__ __forceinline__ T sigmoid_(T v) {
    // exp of a negative number only: no overflow in either tail, full precision in both
    if (v >= T(0)) return T(1) / (T(1) + exp_(-v));
    const T e = exp_(v);
    return e / (T(1) + e);
}

template <typename T>
__device__ void lstm_cell_forward(T* __restrict__ z, const T* __restrict__ c_prev,
                                  T* __restrict__ c, T* __restrict__ tanh_c, T* __restrict__ h,
                                  long long U, long long N, int feature_major,
                                  T scale_i, T scale_f, T scale_c, T scale_o) {
    const long long total = U * N;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        long long u, n, s, gate, first;
        if (feature_major) {     // consecutive threads along the batch, the contiguous axis
            u = idx / N;  n = idx % N;  s = idx;  gate = U * N;  first = u * N + n;
        } else {                 // consecutive threads along the units
            n = idx / U;  u = idx % U;  s = idx;  gate = U;  first = n * 4 * U + u;
        }
        const T i = sigmoid_(z[first] / scale_i);
        const T f = sigmoid_(z[first + gate] / scale_f);
        const T g = tanh_(z[first + 2 * gate] / scale_c);
        const T o = sigmoid_(z[first + 3 * gate] / scale_o);
        const T cn = f * c_prev[s] + i * g;
        const T tc = tanh_(cn);
        z[first] = i;
        z[first + gate] = f;
        z[first + 2 * gate] = g;
        z[first + 3 * gate] = o;
        c[s] = cn;
        tanh_c[s] = tc;
        h[s] = o * tc;
    }
}

extern "C" __global__ void lstm_cell_forward_f32(
        float* z, const float* c_prev, float* c, float* tanh_c, float* h, long long U,
        long long N, int feature_major, float scale_i, float scale_f, float scale_c,
        float scale_o) {
    lstm_cell_forward<float>(z, c_prev, c, tanh_c, h, U, N, feature_major,
                             scale_i, scale_f, scale_c, scale_o);
}

extern "C" __global__ void lstm_cell_forward_f64(
        double* z, const double* c_prev, double* c, double* tanh_c, double* h, long long U,
        long long N, int feature_major, double scale_i, double scale_f, double scale_c,
        double scale_o) {
    lstm_cell_forward<double>(z, c_prev, c, tanh_c, h, U, N, feature_major,
                              scale_i, scale_f, scale_c, scale_o);
}
