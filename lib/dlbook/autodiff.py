"""A tiny reverse-mode automatic differentiation engine (chapter 03; Baggag & Saad, §3.5).

A :class:`Tensor` wraps a NumPy array (float64) and remembers the operation that
produced it: its *parents* (the nodes it was computed from) and, for each parent, a
function that turns the error of the node into that parent's share of the error.
Together the tensors form a directed acyclic *computational graph* whose root is the
scalar target ``f``. :meth:`Tensor.backward` visits the nodes in reverse topological
order and accumulates the errors δ_k = ∂f/∂a_k of (3.24)-(3.25):

    δ_n = ∂f/∂f = 1,     δ_k = Σ_{j : a_k → a_j}  δ_j ∂a_j/∂a_k             (3.25)

Each backward function computes a vector-Jacobian product (the term δ_j ∂a_j/∂a_k)
without forming the Jacobian. Broadcasting is supported: when an operand was
broadcast in the forward pass, its share of the error is summed back over the
broadcast axes (:func:`unbroadcast`), because a value that was *used* many times
receives the sum of the errors of all its uses.

Only NumPy is used here; ``torch.autograd`` appears only in the tests and
notebooks that check this engine against it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

ArrayLike = "np.ndarray | float | int | Sequence"


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``grad`` over the axes along which an operand of ``shape`` was broadcast.

    ``grad`` has the shape of the broadcast result; the answer has ``shape``. Leading
    axes that were added are summed away, axes of length 1 are summed with ``keepdims``.
    """
    shape = tuple(shape)
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra < 0:
        raise ValueError(f"cannot unbroadcast a gradient of shape {grad.shape} to {shape}")
    g = grad.sum(axis=tuple(range(extra))) if extra else grad
    axes = tuple(i for i, (gs, s) in enumerate(zip(g.shape, shape)) if s == 1 and gs != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    if g.shape != shape:
        raise ValueError(f"cannot unbroadcast a gradient of shape {grad.shape} to {shape}")
    return g


class Tensor:
    """A node of the computational graph: a float64 array, its error ``grad`` and its parents.

    ``Tensor(data, name="x")`` creates a leaf (a primary variable); operations on
    tensors create inner nodes. After ``f.backward()`` every node ``a`` that ``f``
    depends on holds ``a.grad`` = ∂f/∂a, an array of the same shape as ``a.data``.
    """

    def __init__(self, data, parents: Sequence["Tensor"] = (), op: str = "",
                 backward_fns: Sequence[Callable[[np.ndarray], np.ndarray]] = (), name: str = ""):
        if isinstance(data, Tensor):
            raise TypeError("Tensor(data) expects an array or a number, not a Tensor")
        arr = np.asarray(data, dtype=np.float64)
        if arr.dtype == object:
            raise TypeError(f"cannot make a Tensor from {type(data).__name__}")
        if len(parents) != len(backward_fns):
            raise ValueError("need one backward function per parent")
        self.data: np.ndarray = arr
        self.grad: np.ndarray | None = None
        self.parents: tuple[Tensor, ...] = tuple(parents)
        self.backward_fns = tuple(backward_fns)
        self.op = op
        self.name = name

    # -- basics ---------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def is_leaf(self) -> bool:
        return not self.parents

    def __repr__(self) -> str:
        label = self.name or self.op or "leaf"
        return f"Tensor({label}, shape={self.shape})"

    def item(self) -> float:
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return float(self.data.reshape(()))

    def numpy(self) -> np.ndarray:
        return self.data

    # -- operations -----------------------------------------------------------
    def __add__(self, other) -> "Tensor":
        return add(self, other)

    __radd__ = __add__

    def __sub__(self, other) -> "Tensor":
        return add(self, neg(as_tensor(other)))

    def __rsub__(self, other) -> "Tensor":
        return add(as_tensor(other), neg(self))

    def __neg__(self) -> "Tensor":
        return neg(self)

    def __mul__(self, other) -> "Tensor":
        return mul(self, other)

    __rmul__ = __mul__

    def __truediv__(self, other) -> "Tensor":
        return mul(self, power(as_tensor(other), -1.0))

    def __rtruediv__(self, other) -> "Tensor":
        return mul(as_tensor(other), power(self, -1.0))

    def __pow__(self, exponent: float) -> "Tensor":
        return power(self, exponent)

    def __matmul__(self, other) -> "Tensor":
        return matmul(self, other)

    def __rmatmul__(self, other) -> "Tensor":
        return matmul(as_tensor(other), self)

    def sum(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> "Tensor":
        return tsum(self, axis, keepdims)

    def mean(self, axis: int | None = None, keepdims: bool = False) -> "Tensor":
        n = self.data.size if axis is None else self.data.shape[axis]
        return tsum(self, axis, keepdims) * (1.0 / n)

    def relu(self) -> "Tensor":
        return relu(self)

    def tanh(self) -> "Tensor":
        return tanh(self)

    def exp(self) -> "Tensor":
        return exp(self)

    def log(self) -> "Tensor":
        return log(self)

    # -- back-propagation -------------------------------------------------------
    def backward(self) -> list["Tensor"]:
        """Back-propagate from this scalar root: δ_root = 1, then (3.25) in reverse topological order.

        Errors are *accumulated* (``+=``) because a node used by several children
        receives one term per child. Gradients from an earlier call are discarded.
        Returns the nodes in the order they were processed (root first).
        """
        if self.data.size != 1:
            raise ValueError(f"backward() starts from a scalar f, got shape {self.shape}")
        order = topological_sort(self)
        for node in order:
            node.grad = np.zeros_like(node.data)
        self.grad = np.ones_like(self.data)             # δ_n = ∂f/∂f = 1
        for node in reversed(order):                    # every child before its parents
            for parent, fn in zip(node.parents, node.backward_fns):
                parent.grad = parent.grad + fn(node.grad)  # δ_k += δ_j ∂a_j/∂a_k
        return list(reversed(order))


def as_tensor(x) -> Tensor:
    """``x`` itself if it is a :class:`Tensor`, else a constant leaf holding ``x``."""
    return x if isinstance(x, Tensor) else Tensor(x)


def topological_sort(root: Tensor) -> list[Tensor]:
    """The nodes ``root`` depends on, each listed after all of its parents (leaves first, root last).

    Depth-first search without recursion, so that deep graphs do not hit Python's
    recursion limit. Shared nodes appear once.
    """
    if not isinstance(root, Tensor):
        raise TypeError(f"topological_sort expects a Tensor, got {type(root).__name__}")
    order: list[Tensor] = []
    seen: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        for p in reversed(node.parents):
            if id(p) not in seen:
                stack.append((p, False))
    return order


# ---------------------------------------------------------------------------
# The operations: each returns the value and one vector-Jacobian product per parent


def add(a, b) -> Tensor:
    """a + b (broadcasting); ∂(a+b)/∂a = ∂(a+b)/∂b = identity."""
    a, b = as_tensor(a), as_tensor(b)
    return Tensor(a.data + b.data, (a, b), "+",
                  (lambda g: unbroadcast(g, a.shape), lambda g: unbroadcast(g, b.shape)))


def neg(a: Tensor) -> Tensor:
    """-a."""
    return Tensor(-a.data, (a,), "neg", (lambda g: -g,))


def mul(a, b) -> Tensor:
    """Element-wise a ⊙ b (broadcasting); δ_a = δ ⊙ b, δ_b = δ ⊙ a."""
    a, b = as_tensor(a), as_tensor(b)
    return Tensor(a.data * b.data, (a, b), "×",
                  (lambda g: unbroadcast(g * b.data, a.shape), lambda g: unbroadcast(g * a.data, b.shape)))


def power(a: Tensor, exponent: float) -> Tensor:
    """a ** p for a constant real p; δ_a = δ ⊙ p a^(p-1)."""
    if not isinstance(exponent, (int, float)):
        raise TypeError(f"the exponent must be a number, got {type(exponent).__name__}")
    p = float(exponent)
    return Tensor(a.data ** p, (a,), f"^{p:g}", (lambda g: g * p * a.data ** (p - 1),))


def matmul(a, b) -> Tensor:
    """A @ B for A ``(n, k)``, B ``(k, m)``; δ_A = δ Bᵀ ``(n, k)``, δ_B = Aᵀ δ ``(k, m)``.

    Vectors are allowed on either side (``(k,)``), as in NumPy.
    """
    a, b = as_tensor(a), as_tensor(b)
    if a.ndim not in (1, 2) or b.ndim not in (1, 2):
        raise ValueError(f"matmul supports 1-D and 2-D operands, got shapes {a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[0]:
        raise ValueError(f"matmul shapes do not match: {a.shape} @ {b.shape}")

    def grad_a(g):
        g2 = g.reshape(-1, b.shape[-1] if b.ndim == 2 else 1)
        b2 = b.data.reshape(b.shape[0], -1)
        return (g2 @ b2.T).reshape(a.shape)

    def grad_b(g):
        a2 = a.data.reshape(-1, a.shape[-1])
        g2 = g.reshape(a2.shape[0], -1)
        return (a2.T @ g2).reshape(b.shape)

    return Tensor(a.data @ b.data, (a, b), "@", (grad_a, grad_b))


def relu(a: Tensor) -> Tensor:
    """max(0, a); δ_a = δ ⊙ 1[a > 0] (the derivative at 0 is taken to be 0, as in PyTorch)."""
    mask = (a.data > 0).astype(np.float64)
    return Tensor(a.data * mask, (a,), "relu", (lambda g: g * mask,))


def tanh(a: Tensor) -> Tensor:
    """tanh(a); δ_a = δ ⊙ (1 - tanh²(a))."""
    t = np.tanh(a.data)
    return Tensor(t, (a,), "tanh", (lambda g: g * (1.0 - t * t),))


def sigmoid(a: Tensor) -> Tensor:
    """1 / (1 + e^{-a}); δ_a = δ ⊙ s (1 - s)."""
    s = 0.5 * (1.0 + np.tanh(0.5 * a.data))  # the same value, without overflow
    return Tensor(s, (a,), "sigmoid", (lambda g: g * s * (1.0 - s),))


def exp(a: Tensor) -> Tensor:
    """e^a; δ_a = δ ⊙ e^a."""
    e = np.exp(a.data)
    return Tensor(e, (a,), "exp", (lambda g: g * e,))


def log(a: Tensor) -> Tensor:
    """Natural logarithm (a > 0); δ_a = δ / a."""
    if np.any(a.data <= 0):
        raise ValueError("log needs positive entries")
    return Tensor(np.log(a.data), (a,), "log", (lambda g: g / a.data,))


def tsum(a: Tensor, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
    """Σ over ``axis`` (all entries when None); δ_a = δ copied back along the summed axes."""
    out = a.data.sum(axis=axis, keepdims=keepdims)
    axes = tuple(range(a.ndim)) if axis is None else ((axis,) if isinstance(axis, int) else tuple(axis))
    axes = tuple(ax % a.ndim for ax in axes) if a.ndim else ()

    def grad(g):
        if not keepdims:
            g = np.expand_dims(g, axes) if axes else g
        return np.broadcast_to(g, a.shape).copy()

    return Tensor(out, (a,), "sum", (grad,))


def log_softmax(z: Tensor) -> Tensor:
    """Row-wise log softmax of ``z`` ``(n, C)`` built from the primitive ops.

    The row maximum is subtracted as a constant (it does not change the value,
    and its gradient contribution cancels exactly).
    """
    m = Tensor(z.data.max(axis=-1, keepdims=True))
    s = z - m
    return s - log(exp(s).sum(axis=-1, keepdims=True))


def cross_entropy(logits: Tensor, labels: np.ndarray) -> Tensor:
    """Mean cross-entropy -(1/n) Σ_i log softmax(z_i)[y_i] (3.11) for integer ``labels`` ``(n,)``."""
    labels = np.asarray(labels)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"need logits (n, C) and labels (n,), got {logits.shape} and {labels.shape}")
    onehot = np.eye(logits.shape[1])[labels]
    return -(log_softmax(logits) * onehot).sum() * (1.0 / logits.shape[0])


# ---------------------------------------------------------------------------
# Checking and drawing


def numerical_gradient(f: Callable[..., float], arrays: Sequence[np.ndarray], eps: float = 1e-6) -> list[np.ndarray]:
    """Central differences (f(x + ε e_i) - f(x - ε e_i)) / 2ε for every entry of every array.

    ``f`` takes the arrays (float64) and returns a number. The error is O(ε²) plus
    rounding of order (machine ε)·|f| / ε.
    """
    arrays = [np.array(a, dtype=np.float64) for a in arrays]
    grads = []
    for k, a in enumerate(arrays):
        g = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            old = a[i]
            a[i] = old + eps
            up = float(f(*arrays))
            a[i] = old - eps
            down = float(f(*arrays))
            a[i] = old
            g[i] = (up - down) / (2 * eps)
        grads.append(g)
    return grads


def graph_edges(root: Tensor) -> tuple[list[Tensor], list[tuple[int, int]]]:
    """The nodes (in topological order) and the edges ``(parent index, child index)`` of the graph."""
    nodes = topological_sort(root)
    index = {id(n): i for i, n in enumerate(nodes)}
    edges = [(index[id(p)], i) for i, n in enumerate(nodes) for p in n.parents]
    return nodes, edges


def draw_graph(root: Tensor, ax=None, show_grad: bool = False, title: str = "computational graph",
               leaves_left: bool = True):
    """Draw the graph of ``root`` with matplotlib, leaves on the left and ``root`` on the right.

    Leaves sit in the first column; every other node one column left of its nearest child
    (the root is in the column of its longest path from a leaf); with ``leaves_left=False``
    the leaves too sit just left of their nearest child. Leaves are
    drawn as squares with their name, operations as circles with their symbol; with
    ``show_grad`` the value of a scalar node's error δ is written beneath it.
    """
    import matplotlib.pyplot as plt

    nodes, edges = graph_edges(root)
    depth = [0] * len(nodes)
    for i, n in enumerate(nodes):
        parents = [j for j, k in edges if k == i]
        depth[i] = 1 + max((depth[j] for j in parents), default=-1)
    for i in reversed(range(len(nodes) - 1)):  # inner nodes move right, next to their first child
        children = [k for j, k in edges if j == i]
        if (nodes[i].parents or not leaves_left) and children:
            depth[i] = min(depth[k] for k in children) - 1
    columns: dict[int, list[int]] = {}
    for i, d in enumerate(depth):
        columns.setdefault(d, []).append(i)
    pos: dict[int, tuple[float, float]] = {}
    for d in sorted(columns):
        members = columns[d]
        if d > 0:  # order each column by the mean height of the parents (fewer crossings)
            members.sort(key=lambda i: -np.mean([pos[j][1] for j, k in edges if k == i])
                         if nodes[i].parents else np.inf)   # leaves below the operations
        for r, i in enumerate(members):
            pos[i] = (d, (len(members) - 1) / 2 - r)
    if ax is None:
        from .plotting import figure_width

        width = figure_width(1.6 * (max(depth) + 1) + 1)
        _, ax = plt.subplots(figsize=(width, 1.1 * max(len(m) for m in columns.values()) + 1))
    for j, k in edges:
        (x0, y0), (x1, y1) = pos[j], pos[k]
        bend = 0.0 if x1 - x0 <= 1 else 0.25   # long edges curve around the nodes in between
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                    arrowprops=dict(arrowstyle="-|>", color="0.4", shrinkA=14, shrinkB=14, lw=1,
                                    connectionstyle=f"arc3,rad={bend}"))
    for i, n in enumerate(nodes):
        x, y = pos[i]
        leaf = n.is_leaf
        label = n.name or (n.op if not leaf else f"{n.item():g}" if n.data.size == 1 else "const")
        ax.text(x, y, label, ha="center", va="center", zorder=3,
                bbox=dict(boxstyle="square,pad=0.4" if leaf else "circle,pad=0.3",
                          fc="#d9e8f5" if leaf else "#fde9c9", ec="0.3"))
        if show_grad and n.grad is not None and n.grad.size == 1:
            ax.text(x, y - 0.36, f"δ={float(n.grad.reshape(())):.3g}", ha="center", va="top",
                    color="C3")
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    ax.set_ylim(min(ys) - 0.8, max(ys) + 0.6)
    ax.set_axis_off()
    ax.set_title(title)
    return ax

