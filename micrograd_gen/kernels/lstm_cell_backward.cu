// Backward of one LSTM cell step (lstm_cell_forward.cu): the gradient of the gates'
// pre-activations and of the previous cell state, in one pass.
//
// NumPy reference: micrograd_gen.cuda_kernels.lstm_cell_backward_reference; the same arithmetic as
// one step of micrograd_gen.ops.lstm.LSTM.backward.
//
// In:   act      the activations (i, f, g, o) that lstm_cell_forward left in z
//       c_prev   the cell state the step started from
//       tanh_c   tanh of the step's new cell state
//       dh       dL/dh of this step (from the output and from the next step's recurrence)
//       dc       dL/dc of this step's new cell state (carried back from the next step)
// Out:  act      overwritten with dL/dz (same layout), what the weight-gradient GEMMs need
//       dc       overwritten with dL/dc_prev, ready for the step before
//     dc_t = dc + dh * o * (1 - tanh_c^2)
//     dz_i = dc_t * g * i (1 - i)        dz_f = dc_t * c_prev * f (1 - f)
//     dz_c = dc_t * i * (1 - g^2)        dz_o = dh * tanh_c * o (1 - o)
//     dc_prev = dc_t * f
// The gradients are of the plain pre-activations z (not of any pre-scaled form).
// Layouts as in lstm_cell_forward.cu (feature_major: z (4U, N), states (U, N); else (N, 4U),
// (N, U)). One thread per (unit, sample), touching only its own elements.

template <typename T>
__device__ void lstm_cell_backward(T* __restrict__ act, const T* __restrict__ c_prev,
                                   const T* __restrict__ tanh_c, const T* __restrict__ dh,
                                   T* __restrict__ dc, long long U, long long N,
                                   int feature_major) {
    const long long total = U * N;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        long long u, n, s, gate, first;
        if (feature_major) {
            u = idx / N;  n = idx % N;  s = idx;  gate = U * N;  first = u * N + n;
        } else {
            n = idx / U;  u = idx % U;  s = idx;  gate = U;  first = n * 4 * U + u;
        }
        const T i = act[first];
        const T f = act[first + gate];
        const T g = act[first + 2 * gate];
        const T o = act[first + 3 * gate];
        const T tc = tanh_c[s];
        const T dhs = dh[s];
        const T dct = dc[s] + dhs * o * (T(1) - tc * tc);
        act[first] = dct * g * i * (T(1) - i);
        act[first + gate] = dct * c_prev[s] * f * (T(1) - f);
        act[first + 2 * gate] = dct * i * (T(1) - g * g);
        act[first + 3 * gate] = dhs * tc * o * (T(1) - o);
        dc[s] = dct * f;
    }
}

extern "C" __global__ void lstm_cell_backward_f32(
        float* act, const float* c_prev, const float* tanh_c, const float* dh, float* dc,
        long long U, long long N, int feature_major) {
    lstm_cell_backward<float>(act, c_prev, tanh_c, dh, dc, U, N, feature_major);
}

extern "C" __global__ void lstm_cell_backward_f64(
        double* act, const double* c_prev, const double* tanh_c, const double* dh, double* dc,
        long long U, long long N, int feature_major) {
    lstm_cell_backward<double>(act, c_prev, tanh_c, dh, dc, U, N, feature_major);
}
