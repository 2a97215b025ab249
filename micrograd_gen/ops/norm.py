"""Batch normalisation and layer normalisation, with Keras 3's formulas (epsilon 1e-3).

batch_norm normalises each channel (the `axis`) over every other axis; layer_norm normalises each
position over its last axis. Both use the biased variance (divide by the count), as Keras does.

batch_norm and its moving statistics
------------------------------------
`moving_mean` and `moving_variance` are not differentiable inputs: they are Tensors (or arrays)
that batch_norm reads at inference and, under `training=True`, updates *in place* (their arrays
are overwritten, so a layer or an optimiser holding them sees the new values), Keras 3's way:

    moving_mean     = moving_mean * momentum     + batch_mean     * (1 - momentum)
    moving_variance = moving_variance * momentum + batch_variance * (1 - momentum)

with the biased batch variance (Keras 3 does not apply Bessel's correction here). Pass
`update_moving_stats=False` to normalise with batch statistics without touching them (a gradient
check evaluates the same batch many times).
"""
from ..backend import get_array_module
from ..tensor import Function, Tensor


def _channel_shape(ndim, axis, channels):
    shape = [1] * ndim
    shape[axis] = channels
    return tuple(shape)


class BatchNormTraining(Function):
    """Normalise with the batch's own mean and variance; backward runs through those statistics."""

    def forward(self, x, gamma, beta, axis=-1, epsilon=1e-3, moving_mean=None,
                moving_variance=None, momentum=0.99):
        xp = get_array_module(x)
        axis = axis % x.ndim
        reduce_axes = tuple(a for a in range(x.ndim) if a != axis)
        self.reduce_axes = reduce_axes
        self.count = x.size // x.shape[axis]
        if self.count < 1:
            raise ValueError("batch_norm: training mode needs at least one value per channel")
        mean = x.mean(axis=reduce_axes, keepdims=True)                    # (1, .., C, .., 1)
        centred = x - mean
        variance = (centred * centred).mean(axis=reduce_axes, keepdims=True)
        inv_std = 1 / xp.sqrt(variance + x.dtype.type(epsilon))
        x_hat = centred
        x_hat *= inv_std                                                  # same shape as x
        for stat, batch in ((moving_mean, mean), (moving_variance, variance)):
            if stat is not None:  # Keras 3's update, in place so that every holder sees it
                stat *= stat.dtype.type(momentum)
                stat += (batch.reshape(-1) * (1 - momentum)).astype(stat.dtype, copy=False)
        self.inv_std, self.x_hat = inv_std, x_hat
        self.gamma = None if gamma is None else gamma.reshape(inv_std.shape)
        y = x_hat * self.gamma if gamma is not None else x_hat.copy()
        if beta is not None:
            y += beta.reshape(inv_std.shape)
        return y

    def backward(self, g):
        need_x, need_gamma, need_beta = self.needs_input_grad
        axes = self.reduce_axes
        x_hat = self.x_hat
        dbeta = g.sum(axis=axes) if need_beta else None
        g_xhat_sum = (g * x_hat).sum(axis=axes, keepdims=True) if (need_x or need_gamma) else None
        dgamma = g_xhat_sum.reshape(-1) if need_gamma else None
        dx = None
        if need_x:
            scale = self.inv_std if self.gamma is None else self.inv_std * self.gamma
            # d/dx of (x - mean) / std through the batch mean and variance:
            # dx = scale * (g - mean(g) - x_hat * mean(g * x_hat)), means over the batch axes.
            g_mean = g.mean(axis=axes, keepdims=True)
            dx = x_hat * (g_xhat_sum / g.dtype.type(self.count))
            dx += g_mean
            xp = get_array_module(g)
            xp.subtract(g, dx, out=dx)
            dx *= scale
        return dx, dgamma, dbeta


class BatchNormInference(Function):
    """y = (x - moving_mean) / sqrt(moving_variance + eps) * gamma + beta, as one scale and shift."""

    def forward(self, x, gamma, beta, moving_mean=None, moving_variance=None, axis=-1,
                epsilon=1e-3):
        xp = get_array_module(x)
        shape = _channel_shape(x.ndim, axis % x.ndim, x.shape[axis])
        self.reduce_axes = tuple(a for a in range(x.ndim) if a != axis % x.ndim)
        mean = xp.asarray(moving_mean, dtype=x.dtype).reshape(shape)
        inv_std = 1 / xp.sqrt(xp.asarray(moving_variance, dtype=x.dtype).reshape(shape)
                              + x.dtype.type(epsilon))
        scale = inv_std if gamma is None else inv_std * gamma.reshape(shape)
        shift = -mean * scale
        if beta is not None:
            shift += beta.reshape(shape)
        self.scale = scale
        if self.needs_input_grad[1]:
            self.x_hat = (x - mean) * inv_std  # only a trainable gamma needs it
        y = x * scale
        y += shift
        return y

    def backward(self, g):
        need_x, need_gamma, need_beta = self.needs_input_grad
        axes = self.reduce_axes
        dx = g * self.scale if need_x else None
        dgamma = (g * self.x_hat).sum(axis=axes) if need_gamma else None
        dbeta = g.sum(axis=axes) if need_beta else None
        return dx, dgamma, dbeta


def _array(t):
    return t.data if isinstance(t, Tensor) else t


def batch_norm(x, gamma, beta, moving_mean, moving_variance, training=False, momentum=0.99,
               epsilon=1e-3, axis=-1, update_moving_stats=True):
    """Keras BatchNormalization on `x` (channels on `axis`, last by default).

    gamma, beta: (C,) Tensors or None (Keras's scale=False / center=False).
    moving_mean, moving_variance: (C,) Tensors or arrays, never differentiated. training=False
    normalises with them; training=True normalises with the batch statistics and (unless
    update_moving_stats=False) overwrites their arrays in place with Keras's momentum update.
    """
    data = _array(x)
    channels = data.shape[axis] if -data.ndim <= axis < data.ndim else None
    if channels is None:
        raise ValueError(f"batch_norm: axis {axis} is out of range for x of shape {tuple(data.shape)}")
    for name, t in (("gamma", gamma), ("beta", beta), ("moving_mean", moving_mean),
                    ("moving_variance", moving_variance)):
        if t is not None and tuple(_array(t).shape) != (channels,):
            raise ValueError(f"batch_norm: {name} has shape {tuple(_array(t).shape)}, expected "
                             f"({channels},) for x of shape {tuple(data.shape)} and axis {axis}")
    if not training:
        return BatchNormInference.apply(x, gamma, beta, moving_mean=_array(moving_mean),
                                        moving_variance=_array(moving_variance), axis=axis,
                                        epsilon=epsilon)
    if not update_moving_stats:
        moving_mean = moving_variance = None
    return BatchNormTraining.apply(x, gamma, beta, axis=axis, epsilon=epsilon,
                                   moving_mean=_array(moving_mean),
                                   moving_variance=_array(moving_variance), momentum=momentum)


def fold_batch_norm_into_conv(kernel, gamma, beta, moving_mean, moving_variance, epsilon=1e-3):
    """(kernel, bias) of ONE convolution that computes an inference-mode batch_norm of a bias-free
    conv2d(x, kernel) (kernel (kh, kw, C, F); the batch norm over the F output channels).

    Inference-mode batch norm is a per-channel y * scale + shift, with
        scale = gamma / sqrt(moving_variance + epsilon),   shift = beta - moving_mean * scale,
    and conv2d is linear in its kernel, so conv2d(x, K) * scale + shift = conv2d(x, K * scale)
    + shift: the scale goes into the kernel's output axis, the shift becomes the bias. The
    arguments are arrays or Tensors (gamma, beta None where the layer has none); they are read,
    not changed. Used by micrograd_gen.applications.fold_batch_norm.
    """
    kernel, moving_mean, moving_variance = (_array(t) for t in (kernel, moving_mean,
                                                                 moving_variance))
    xp = get_array_module(kernel)
    dtype = kernel.dtype
    scale = 1 / xp.sqrt(xp.asarray(moving_variance, dtype=dtype) + dtype.type(epsilon))  # (F,)
    if gamma is not None:
        scale = scale * _array(gamma)
    shift = -xp.asarray(moving_mean, dtype=dtype) * scale                               # (F,)
    if beta is not None:
        shift = shift + _array(beta)
    return kernel * scale.astype(dtype), shift.astype(dtype)


class LayerNorm(Function):
    """(x - mean) / sqrt(var + eps) * gamma + beta over the last axis, per position."""

    def forward(self, x, gamma, beta, epsilon=1e-3):
        xp = get_array_module(x)
        mean = x.mean(axis=-1, keepdims=True)                             # (..., 1)
        x_hat = x - mean
        variance = (x_hat * x_hat).mean(axis=-1, keepdims=True)
        inv_std = 1 / xp.sqrt(variance + x.dtype.type(epsilon))
        x_hat *= inv_std                                                  # (..., C)
        self.x_hat, self.inv_std, self.gamma = x_hat, inv_std, gamma
        y = x_hat * gamma if gamma is not None else x_hat.copy()
        if beta is not None:
            y += beta
        return y

    def backward(self, g):
        need_x, need_gamma, need_beta = self.needs_input_grad
        x_hat = self.x_hat
        lead = tuple(range(g.ndim - 1))
        dgamma = (g * x_hat).sum(axis=lead) if need_gamma else None
        dbeta = g.sum(axis=lead) if need_beta else None
        dx = None
        if need_x:
            g_hat = g * self.gamma if self.gamma is not None else g
            # dx = inv_std * (g_hat - mean(g_hat) - x_hat * mean(g_hat * x_hat)) over the last axis
            proj = (g_hat * x_hat).mean(axis=-1, keepdims=True)
            dx = x_hat * proj
            dx += g_hat.mean(axis=-1, keepdims=True)
            get_array_module(g).subtract(g_hat, dx, out=dx)
            dx *= self.inv_std
        return dx, dgamma, dbeta


def layer_norm(x, gamma, beta, epsilon=1e-3):
    """Keras LayerNormalization over the last axis; gamma, beta (C,) Tensors or None."""
    channels = _array(x).shape[-1]
    for name, t in (("gamma", gamma), ("beta", beta)):
        if t is not None and tuple(_array(t).shape) != (channels,):
            raise ValueError(f"layer_norm: {name} has shape {tuple(_array(t).shape)}, expected "
                             f"({channels},) for x of shape {tuple(_array(x).shape)}")
    return LayerNorm.apply(x, gamma, beta, epsilon=epsilon)
