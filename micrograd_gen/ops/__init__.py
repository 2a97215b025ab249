"""Differentiable ops. Each lives in one file with its forward and backward side by side:

elementwise.py  arithmetic and pointwise nonlinearities      reduce.py     sum, mean, var, max, ...
shape.py        reshape, transpose, slicing, concat, pad      linalg.py     matmul, affine, gram
softmax.py      softmax, log_softmax                          losses.py     cross-entropies, MSE
dropout.py      dropout                                       embedding.py  embedding lookup
norm.py         batch_norm, layer_norm                        lstm.py       lstm, lstm_step (lstm_cell)
attention.py    scaled_dot_product_attention, project_heads / merge_heads, multi_head_attention

Importing this package also gives Tensor its operators and method spellings (`a + b`, `x.sum()`):
see the end of this file.
"""
from .attention import (merge_heads, multi_head_attention, project_heads,
                        scaled_dot_product_attention)
from .conv import conv2d, conv2d_transpose
from .dropout import dropout
from .elementwise import (abs, add, cast, clip, divide, exp, leaky_relu, log, maximum, minimum,
                          multiply, negative, power, relu, sigmoid, softplus, sqrt, subtract, tanh,
                          where)
from .embedding import embedding
from .linalg import affine, gram, matmul
from .lstm import lstm, lstm_step
from .losses import (binary_crossentropy, categorical_crossentropy, mean_squared_error,
                     sparse_categorical_crossentropy)
from .norm import batch_norm, layer_norm
from .pool import avg_pool2d, global_avg_pool2d, max_pool2d, upsample2d
from .reduce import logsumexp, max, mean, min, sum, var
from .resize import resize_bilinear
from .shape import (broadcast_to, concatenate, expand_dims, flatten, getitem, pad, reshape,
                    split, squeeze, stack, transpose)
from .softmax import log_softmax, softmax

from .. import tensor as _tensor


# ---- Tensor's operators and method spellings -----------------------------------------------------
# The ops attach them here (as Chainer's basic_math and early tinygrad do), so that tensor.py, below
# every op, imports none: `a + b` is add(a, b), `b + a` with b a number or array is add(b, a).
def _attach_to(Tensor):  # noqa: N803  (the class itself)
    Tensor.__add__ = lambda self, other: add(self, other)
    Tensor.__radd__ = lambda self, other: add(other, self)
    Tensor.__sub__ = lambda self, other: subtract(self, other)
    Tensor.__rsub__ = lambda self, other: subtract(other, self)
    Tensor.__mul__ = lambda self, other: multiply(self, other)
    Tensor.__rmul__ = lambda self, other: multiply(other, self)
    Tensor.__truediv__ = lambda self, other: divide(self, other)
    Tensor.__rtruediv__ = lambda self, other: divide(other, self)
    Tensor.__pow__ = lambda self, other: power(self, other)
    Tensor.__rpow__ = lambda self, other: power(other, self)
    Tensor.__matmul__ = lambda self, other: matmul(self, other)
    Tensor.__rmatmul__ = lambda self, other: matmul(other, self)
    Tensor.__neg__ = negative
    Tensor.__abs__ = abs
    Tensor.__getitem__ = getitem

    Tensor.sum = sum
    Tensor.mean = mean
    Tensor.max = max
    Tensor.min = min
    Tensor.exp = exp
    Tensor.log = log
    Tensor.sqrt = sqrt
    Tensor.tanh = tanh
    Tensor.sigmoid = sigmoid
    Tensor.relu = relu
    Tensor.flatten = flatten
    Tensor.astype = cast
    Tensor.reshape = lambda self, *shape: reshape(self, shape[0] if len(shape) == 1 else shape)
    Tensor.transpose = lambda self, *axes: transpose(self,
                                                     axes[0] if len(axes) == 1 else (axes or None))
    Tensor.T = property(transpose)


_attach_to(_tensor.Tensor)
