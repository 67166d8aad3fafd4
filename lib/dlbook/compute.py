"""What a model costs: FLOPs counted by hand, by PyTorch, per second, and in energy (ch20).

A FLOP here is one floating-point addition or multiplication, the convention of
``torch.utils.flop_counter.FlopCounterMode``, of Kaplan et al. (2020) and of
Patterson et al. (2021). A product of an ``(m, k)`` and a ``(k, n)`` matrix makes
``m n`` dot products of length ``k``, each ``k`` multiplications and ``k`` additions:

    FLOPs(A B) = 2 m n k                                                  (C.1)

A linear layer on a batch of ``B`` rows is (C.1) with ``m = B``; its bias adds ``B n``
more, which the counter does not count (nor activations, softmax, norms, pooling: only
matrix products and convolutions). A convolution with ``C_in`` input channels, ``C_out``
kernels of size ``k x k`` and an ``H_out x W_out`` output makes, per output value, one dot
product of length ``C_in k^2``:

    FLOPs(conv) = 2 C_in k^2 C_out H_out W_out B                           (C.2)

Attention with ``H`` heads of size ``d_h`` over ``n`` queries and ``m`` keys adds two
batched products per head, the scores ``Q K^T`` and the mixture ``A V``:

    FLOPs(Q K^T) + FLOPs(A V) = 2 B H n m d_h + 2 B H n m d_h              (C.3)

Backward: a product ``Y = X W`` needs ``dW = X^T dY`` (as many FLOPs as the forward)
and, unless ``X`` is a leaf that does not require a gradient (the data), ``dX = dY W^T``
(as many again). Hence training costs about three forwards, but the first layer only
two: :func:`training_flops` says exactly how much.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn


def _positive(**values: int) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")


def matmul_flops(m: int, n: int, k: int) -> int:
    """FLOPs of an ``(m, k) @ (k, n)`` product, ``2 m n k`` (C.1)."""
    _positive(m=m, n=n, k=k)
    return 2 * m * n * k


def linear_flops(batch: int, d_in: int, d_out: int) -> int:
    """FLOPs of ``X W`` with X ``(batch, d_in)``, W ``(d_in, d_out)``: (C.1), bias not counted."""
    return matmul_flops(batch, d_out, d_in)


def conv2d_flops(batch: int, c_in: int, c_out: int, kernel: int, h_out: int,
                 w_out: int) -> int:
    """FLOPs of a ``kernel x kernel`` convolution (groups=1), ``2 C_in k^2 C_out H_out W_out B``
    (C.2); the output size already includes the effect of stride and padding."""
    _positive(batch=batch, c_in=c_in, c_out=c_out, kernel=kernel, h_out=h_out, w_out=w_out)
    return 2 * c_in * kernel * kernel * c_out * h_out * w_out * batch


def attention_flops(batch: int, n_heads: int, n_queries: int, n_keys: int,
                    d_head: int) -> int:
    """FLOPs of the scores ``Q K^T`` and the mixture ``A V`` of (C.3): ``4 B H n m d_h``.

    The causal mask does not halve it: the full ``n x m`` score matrix is computed and
    the masked entries are then set to ``-inf``.
    """
    _positive(batch=batch, n_heads=n_heads, n_queries=n_queries, n_keys=n_keys,
              d_head=d_head)
    return 2 * 2 * batch * n_heads * n_queries * n_keys * d_head


@dataclass(frozen=True)
class LayerFlops:
    """One matrix-product layer of a forward pass: its name, forward FLOPs, and whether
    its input requires a gradient (False for a layer that reads the data directly)."""

    name: str
    forward: int
    input_grad: bool = True
    weight_grad: bool = True


def forward_flops(layers: Sequence[LayerFlops]) -> int:
    """Sum of the forward FLOPs of ``layers``."""
    return sum(layer.forward for layer in layers)


def training_flops(layers: Sequence[LayerFlops]) -> int:
    """FLOPs of one forward plus backward pass.

    Each layer costs its forward ``F``, plus ``F`` for the weight gradient (if it has
    trainable weights) and ``F`` for the input gradient (if its input requires one):
    ``3 F`` for an interior layer, ``2 F`` for the first, whose input is the data.
    """
    total = 0
    for layer in layers:
        total += layer.forward * (1 + int(layer.weight_grad) + int(layer.input_grad))
    return total


def mlp_layers(sizes: Sequence[int], batch: int) -> list[LayerFlops]:
    """The layers of an MLP with widths ``sizes = [d_0, ..., d_{L+1}]`` on ``batch`` rows."""
    if len(sizes) < 2:
        raise ValueError(f"sizes must list at least two widths, got {list(sizes)}")
    return [LayerFlops(f"linear {i + 1} ({a}->{b})", linear_flops(batch, a, b), i > 0)
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))]


def lenet_layers(model: nn.Module, batch: int, size: int = 28) -> list[LayerFlops]:
    """The four weight layers of :class:`dlbook.cnn.LeNet` on ``(batch, 1, size, size)``.

    conv1 (padding 2) keeps the size, pooling halves it, conv2 (no padding) shrinks it
    by ``k - 1``, pooling halves it again; then the two linear layers.
    """
    for name in ("conv1", "conv2", "fc1", "fc2"):
        if not hasattr(model, name):
            raise TypeError(f"lenet_layers expects a dlbook.cnn.LeNet, got {type(model)}")
    c1, c2 = model.conv1, model.conv2
    h1 = size + 2 * c1.padding[0] - c1.kernel_size[0] + 1
    h2 = h1 // 2 + 2 * c2.padding[0] - c2.kernel_size[0] + 1
    return [
        LayerFlops("conv1", conv2d_flops(batch, c1.in_channels, c1.out_channels,
                                         c1.kernel_size[0], h1, h1), input_grad=False),
        LayerFlops("conv2", conv2d_flops(batch, c2.in_channels, c2.out_channels,
                                         c2.kernel_size[0], h2, h2)),
        LayerFlops("fc1", linear_flops(batch, model.fc1.in_features,
                                       model.fc1.out_features)),
        LayerFlops("fc2", linear_flops(batch, model.fc2.in_features,
                                       model.fc2.out_features)),
    ]


def decoder_layers(d_model: int, n_heads: int, n_layers: int, d_mlp: int, vocab: int,
                   batch: int, seq: int) -> list[LayerFlops]:
    """The matrix products of :class:`dlbook.transformer.DecoderLM` on ``(batch, seq)`` ids.

    Per block: four ``d_model x d_model`` projections (Q, K, V, output), the attention
    products (C.3), the MLP's up and down projections; then the ``d_model x vocab`` head.
    Every input here requires a gradient (the embeddings are trainable). The two
    attention products have no weights, but both of their operands require a gradient,
    so their backward also makes two products each, one per operand (the
    ``input_grad`` and ``weight_grad`` flags of the entry stand for the two operands).
    """
    _positive(d_model=d_model, n_heads=n_heads, n_layers=n_layers, d_mlp=d_mlp,
              vocab=vocab, batch=batch, seq=seq)
    if d_model % n_heads:
        raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
    rows, d_head = batch * seq, d_model // n_heads
    layers = []
    for l in range(1, n_layers + 1):
        layers += [LayerFlops(f"block {l} Q, K, V, out", 4 * linear_flops(rows, d_model,
                                                                        d_model)),
                   LayerFlops(f"block {l} Q K^T and A V",
                              attention_flops(batch, n_heads, seq, seq, d_head)),
                   LayerFlops(f"block {l} MLP", linear_flops(rows, d_model, d_mlp)
                              + linear_flops(rows, d_mlp, d_model))]
    layers.append(LayerFlops("head", linear_flops(rows, d_model, vocab)))
    return layers


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs that ``FlopCounterMode`` records while ``fn()`` runs (forward, backward...)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def count_training_flops(model: nn.Module, loss_fn: Callable, x: torch.Tensor,
                         y: torch.Tensor) -> tuple[int, int]:
    """``(forward, forward + backward)`` FLOPs of one step, as ``FlopCounterMode`` counts.

    The gradients the backward pass leaves are cleared again afterwards.
    """
    fwd = count_flops(lambda: model(x))
    both = count_flops(lambda: loss_fn(model(x), y).backward())
    model.zero_grad(set_to_none=True)
    return fwd, both


# ---------------------------------------------------------------------------
# From FLOPs to energy and CO2 (Strubell et al. 2019; Patterson et al. 2021)


@dataclass(frozen=True)
class EnergyAssumptions:
    """What turns a running time into energy and emissions; every field is an assumption.

    ``power_w``: average power of the hardware while it works (W); ``pue``: the data
    centre's power usage effectiveness (total facility energy / IT energy, >= 1);
    ``grid_g_per_kwh``: carbon intensity of the electricity (g CO2e per kWh).
    """

    power_w: float
    pue: float
    grid_g_per_kwh: float

    def __post_init__(self):
        if not self.power_w > 0:
            raise ValueError(f"power_w must be positive, got {self.power_w}")
        if not self.pue >= 1:
            raise ValueError(f"pue must be at least 1, got {self.pue}")
        if not self.grid_g_per_kwh >= 0:
            raise ValueError(f"grid_g_per_kwh must be >= 0, got {self.grid_g_per_kwh}")


def energy_kwh(seconds: float, a: EnergyAssumptions) -> float:
    """E = t P PUE, in kWh (t in seconds, P in W)."""
    if seconds < 0:
        raise ValueError(f"seconds must be >= 0, got {seconds}")
    return seconds * a.power_w * a.pue / 3.6e6


def co2_kg(kwh: float, a: EnergyAssumptions) -> float:
    """Emissions in kg CO2e: energy (kWh) times the grid intensity (g/kWh) / 1000."""
    if kwh < 0:
        raise ValueError(f"kwh must be >= 0, got {kwh}")
    return kwh * a.grid_g_per_kwh / 1000.0


def run_seconds(flops: float, flops_per_second: float) -> float:
    """Device-seconds to do ``flops`` at a sustained ``flops_per_second``."""
    if not flops >= 0 or not flops_per_second > 0:
        raise ValueError(f"need flops >= 0 and flops_per_second > 0, got {flops}, "
                         f"{flops_per_second}")
    return flops / flops_per_second


def kaplan_training_flops(n_params: float, n_tokens: float) -> float:
    """C ≈ 6 N D (Kaplan et al. 2020): 2 N per token forward, 4 N backward."""
    if not n_params > 0 or not n_tokens > 0:
        raise ValueError(f"n_params and n_tokens must be positive, got {n_params}, "
                         f"{n_tokens}")
    return 6.0 * n_params * n_tokens
