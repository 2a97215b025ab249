// NHWC im2col: the columns of a convolution, read straight from the unpadded input.
//
// NumPy reference: micrograd_gen.cuda_kernels.im2col_reference (the engine's own
// micrograd_gen.ops.conv.im2col on the zero-padded input).
//
// x     (N, H, W, C)                  C-contiguous
// cols  (N, OH, OW, kh * kw * C)      C-contiguous; block t = a * kw + b of the last axis holds
//                                     x[n, oh * sh + a * dh - pt, ow * sw + b * dw - pl, :]
//                                     (zero where that falls in the padding)
// so that cols.reshape(-1, kh*kw*C) @ kernel.reshape(kh*kw*C, F) is the convolution with an HWIO
// kernel. Padding is Keras's: pt / pl before; the bottom / right padding needs no argument, it is
// simply "index >= H or >= W". One thread per column element, consecutive threads along C, so
// reads of x and writes of cols are both coalesced.

template <typename T>
__device__ void im2col_nhwc(const T* __restrict__ x, T* __restrict__ cols,
                            long long N, long long H, long long W, long long C,
                            long long kh, long long kw, long long sh, long long sw,
                            long long dh, long long dw, long long pt, long long pl,
                            long long OH, long long OW) {
    const long long total = N * OH * OW * kh * kw * C;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        long long rest = idx;
        const long long c = rest % C;   rest /= C;
        const long long tap = rest % (kh * kw);   rest /= kh * kw;
        const long long ow = rest % OW;  rest /= OW;
        const long long oh = rest % OH;
        const long long n = rest / OH;
        const long long ih = oh * sh + (tap / kw) * dh - pt;
        const long long iw = ow * sw + (tap % kw) * dw - pl;
        cols[idx] = (ih >= 0 && ih < H && iw >= 0 && iw < W)
                        ? x[((n * H + ih) * W + iw) * C + c] : T(0);
    }
}

extern "C" __global__ void im2col_nhwc_f32(
        const float* x, float* cols, long long N, long long H, long long W, long long C,
        long long kh, long long kw, long long sh, long long sw, long long dh, long long dw,
        long long pt, long long pl, long long OH, long long OW) {
    im2col_nhwc<float>(x, cols, N, H, W, C, kh, kw, sh, sw, dh, dw, pt, pl, OH, OW);
}

extern "C" __global__ void im2col_nhwc_f64(
        const double* x, double* cols, long long N, long long H, long long W, long long C,
        long long kh, long long kw, long long sh, long long sw, long long dh, long long dw,
        long long pt, long long pl, long long OH, long long OW) {
    im2col_nhwc<double>(x, cols, N, H, W, C, kh, kw, sh, sw, dh, dw, pt, pl, OH, OW);
}
