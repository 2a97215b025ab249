// NHWC col2im: the adjoint of im2col_nhwc.cu, the input gradient of a convolution from the
// gradient of its columns.
//
// NumPy reference: micrograd_gen.cuda_kernels.col2im_reference (the engine's own
// micrograd_gen.ops.conv.col2im into a zero-padded buffer, padding cropped off).
//
// cols  (N, OH, OW, kh * kw * C)   as im2col_nhwc lays it out
// dx    (N, H, W, C)               written, not accumulated:
//       dx[n, ih, iw, c] = sum over taps (a, b) and output pixels (oh, ow) with
//                          oh * sh + a * dh - pt == ih and ow * sw + b * dw - pl == iw
//                          of cols[n, oh, ow, a * kw + b, c]
// One thread per input element gathers its (at most kh * kw) contributions, so no two threads
// write the same place: no atomics, and the sum is in a fixed order (the result does not change
// from run to run).

template <typename T>
__device__ void col2im_nhwc(const T* __restrict__ cols, T* __restrict__ dx,
                            long long N, long long H, long long W, long long C,
                            long long kh, long long kw, long long sh, long long sw,
                            long long dh, long long dw, long long pt, long long pl,
                            long long OH, long long OW) {
    const long long total = N * H * W * C;
    const long long taps = kh * kw;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        long long rest = idx;
        const long long c = rest % C;   rest /= C;
        const long long iw = rest % W;  rest /= W;
        const long long ih = rest % H;
        const long long n = rest / H;
        T sum = T(0);
        for (long long a = 0; a < kh; ++a) {
            const long long row = ih + pt - a * dh;          // = oh * sh for a reading pixel
            if (row < 0 || row % sh != 0 || row / sh >= OH) continue;
            const long long oh = row / sh;
            for (long long b = 0; b < kw; ++b) {
                const long long col = iw + pl - b * dw;
                if (col < 0 || col % sw != 0 || col / sw >= OW) continue;
                const long long ow = col / sw;
                sum += cols[(((n * OH + oh) * OW + ow) * taps + a * kw + b) * C + c];
            }
        }
        dx[idx] = sum;
    }
}

extern "C" __global__ void col2im_nhwc_f32(
        const float* cols, float* dx, long long N, long long H, long long W, long long C,
        long long kh, long long kw, long long sh, long long sw, long long dh, long long dw,
        long long pt, long long pl, long long OH, long long OW) {
    col2im_nhwc<float>(cols, dx, N, H, W, C, kh, kw, sh, sw, dh, dw, pt, pl, OH, OW);
}

extern "C" __global__ void col2im_nhwc_f64(
        const double* cols, double* dx, long long N, long long H, long long W, long long C,
        long long kh, long long kw, long long sh, long long sw, long long dh, long long dw,
        long long pt, long long pl, long long OH, long long OW) {
    col2im_nhwc<double>(cols, dx, N, H, W, C, kh, kw, sh, sw, dh, dw, pt, pl, OH, OW);
}
