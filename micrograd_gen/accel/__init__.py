"""Fast paths for the reference ops in micrograd_gen/ops/ (see micrograd_gen/fastpath.py).

Importing this package registers each fast implementation with the op it speeds up; it starts no
threads, loads no library and changes no process setting: the worker threads and NumPy's BLAS
are set up on the first conv, and keep_freed_memory() (a process-wide malloc setting) happens only
when the caller asks (the command line, the tour and the bench scripts do).
`MICROGRAD_GEN_FAST=0` keeps this package unimported.

module       speeds up                          how
blas.py      (used by conv.py)                  cblas gemm with beta = 1 on row blocks, ctypes
workers.py   (used by conv.py and the LSTM)     one worker thread per core, single-threaded BLAS
conv.py      ops.conv2d, ops.conv2d_transpose   shifted GEMMs, fused bias and ReLU; Winograd for
                                                3x3 stride-1 convolutions
conv_thin.py (used by conv.py)                  few channels in or out: taps stacked into one
                                                product per chunk, windows clipped, no padding
conv_columns.py (used by conv.py)               strided layers that train: x's windows gathered
                                                once, kept for dK (one product each way)
conv_subpixel.py (used by conv.py)              the DCGAN's wide 4x4 / 2 transposed layers'
                                                forward as a 3x3 Winograd convolution to s*s*F
                                                channels, laid out depth to space
conv_1d.py   (used by conv.py)                  1 x k kernels on short rows: each pixel's window
                                                copied out at once, one product each way
kept.py      (used by winograd.py, conv_1d.py)  arrays made from a frozen kernel, kept while it
                                                stays equal to a copy
linalg.py    ops.matmul, attention's products   large products (and a bias's gradient between
                                                sections) cut over the worker threads
dense.py     nn.Dense without gradients         product, bias and softmax in place, one call
pool.py      ops.max_pool2d, ops.avg_pool2d     separable passes, preallocated masks; large
                                                ones in bands of rows over the worker threads
elementwise.py ops.relu, ops.leaky_relu         cache-sized pieces on the worker threads
lstm.py      ops.lstm                           the batch cut into one slice per worker thread;
                                                at batch 1 without gradients a loop of its own;
                                                the CUDA cell kernels on CuPy arrays
cuda.py      (used by conv, lstm, losses)       CUDA RawKernels from kernels/*.cu, for CuPy arrays
losses.py    sparse softmax cross-entropy       rows over the worker threads (NumPy); one CUDA
                                                kernel each way (CuPy)
memory.py    the whole process                  glibc malloc keeps freed pages for reuse
branches.py  applications.Branches              an Inception block's branches side by side,
                                                one per worker thread
winograd.py  (used by conv.py)                  F(4x4, 3x3): 36 products instead of 144 per tile
"""
# each registers its fast paths
from . import branches, conv, dense, elementwise, linalg, losses, lstm, pool  # noqa: F401
from .memory import keep_freed_memory

__all__ = ["keep_freed_memory"]
