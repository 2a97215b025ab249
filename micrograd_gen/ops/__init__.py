"""Differentiable ops. Each lives in one file with its forward and backward side by side:

elementwise.py  arithmetic and pointwise nonlinearities      reduce.py     sum, mean, var, max, ...
shape.py        reshape, transpose, slicing, concat, pad      linalg.py     matmul
softmax.py      softmax, log_softmax                          losses.py     cross-entropies, MSE
dropout.py      dropout                                       embedding.py  embedding lookup
norm.py         batch_norm, layer_norm                        lstm.py       lstm, lstm_step
attention.py    scaled_dot_product_attention, project_heads / merge_heads, multi_head_attention
"""
from .attention import (merge_heads, multi_head_attention, project_heads,
                        scaled_dot_product_attention)
from .conv import conv2d, conv2d_transpose
from .dropout import dropout
from .elementwise import (abs, add, cast, clip, divide, exp, leaky_relu, log, maximum, minimum,
                          multiply, negative, power, relu, sigmoid, softplus, sqrt, subtract, tanh,
                          where)
from .embedding import embedding
from .linalg import matmul
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
