"""Embedding lookup: rows of a table picked by integer ids; backward scatter-adds into the table."""
from ..backend import get_array_module
from ..tensor import Function, Tensor


class Embedding(Function):
    def forward(self, table, ids=None):
        xp = get_array_module(table)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"embedding: ids must be integers, got {ids.dtype}")
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= table.shape[0]):
            raise ValueError(f"embedding: ids must lie in [0, {table.shape[0]}), got "
                             f"[{int(ids.min())}, {int(ids.max())}]")
        self.ids, self.table_shape, self.dtype = ids, table.shape, table.dtype
        return xp.take(table, ids, axis=0)                    # ids.shape + (D,)

    def backward(self, g):
        xp = get_array_module(g)
        grad = xp.zeros(self.table_shape, self.dtype)
        # add.at, not grad[ids] = g: the same id appears many times in a batch and must add up.
        xp.add.at(grad, self.ids.reshape(-1), g.reshape(-1, self.table_shape[1]))
        return grad


def embedding(ids, table):
    """ids: integer array or Tensor (any shape); table: (vocab, dim) Tensor."""
    ids = ids.data if isinstance(ids, Tensor) else ids
    return Embedding.apply(table, ids=get_array_module(table.data).asarray(ids))
