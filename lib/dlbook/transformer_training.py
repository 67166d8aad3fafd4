"""Helpers to train the small Transformers of chapter 09 (built on ``dlbook.transformer``).

* Character language modelling. :func:`random_windows` draws ``B`` random windows of
  ``n + 1`` characters from a 1-D id stream and returns inputs ``x = ids[s : s+n]`` and
  targets ``y = ids[s+1 : s+n+1]``, both ``(B, n)``. :func:`lm_nll` measures the mean
  negative log-likelihood (nats per character)

      NLL = -(1/N) sum_t log p(c_{t+1} | c_{t-n+1..t})

  of a causal model on a text with *sliding* windows of length ``n`` moved by ``stride``:
  every character after the first window is scored exactly once, with at least
  ``n - stride`` characters of context.
* :func:`lm_loss`: the mean cross-entropy of per-position logits ``(B, n, V)`` against
  targets ``(B, n)`` (targets ``-100`` are ignored), computed in float32 also under
  autocast. :func:`train_lm` trains a causal model for a number of *steps*, each on a
  fresh batch of :func:`random_windows`: forward, loss, backward, optional clipping of the
  gradient norm (:func:`dlbook.schedules.clip_grad_norm`), optimizer and scheduler step.
* A tiny Vision Transformer. :func:`patchify` cuts images ``(B, H, W)`` into a sequence of
  ``(H/p)(W/p)`` flattened ``p x p`` patches ``(B, n, p^2)`` (row-major order);
  :class:`PatchClassifier` embeds each patch linearly, ``X_0 = P W_E + b_E + E_pos``,
  runs a :class:`dlbook.transformer.Transformer` and classifies the mean of the
  ``n`` token vectors (mean pooling).
* :func:`block_from_torch`: a :class:`dlbook.transformer.Block` carrying the weights of a
  ``nn.TransformerEncoderLayer`` (post-LN when ``norm_first=False``, pre-LN otherwise).
* :func:`block_grad_norms`: the gradient norm ``||dL/dTheta_l||_2`` of the parameters of
  each block ``l = 1..L`` of a ``Transformer`` (after ``loss.backward()``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from tqdm.auto import tqdm

from . import schedules
from .attention import MultiHeadAttention
from .transformer import Block, Transformer, TransformerConfig


def random_windows(ids: torch.Tensor, batch_size: int, n: int,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``B`` random windows of a 1-D id stream: inputs and next-character targets, ``(B, n)`` each."""
    if ids.dim() != 1:
        raise ValueError(f"ids must be a 1-D stream, got shape {tuple(ids.shape)}")
    if batch_size < 1 or n < 1:
        raise ValueError(f"batch_size and n must be positive, got {batch_size} and {n}")
    if len(ids) < n + 1:
        raise ValueError(f"a stream of {len(ids)} ids is too short for windows of {n} + 1")
    starts = torch.randint(0, len(ids) - n, (batch_size,), generator=generator)
    offsets = torch.arange(n + 1)
    rows = ids[starts[:, None] + offsets[None, :]]
    return rows[:, :-1], rows[:, 1:]


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over all positions: logits ``(B, n, V)``, targets ``(B, n)``.

    Targets equal to ``-100`` are left out (positions without a target). The logits are
    cast to float32 first, so the loss is accurate when the model ran under autocast.
    """
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(f"expected logits (B, n, V) and targets (B, n), "
                         f"got {tuple(logits.shape)} and {tuple(targets.shape)}")
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100)


def train_lm(model: nn.Module, ids: torch.Tensor, optimizer: torch.optim.Optimizer, steps: int, *,
             batch_size: int, context: int, generator: torch.Generator | None = None,
             scheduler=None, clip: float | None = None,
             after_backward: Callable[[nn.Module], None] | None = None,
             after_step: Callable[[int], None] | None = None,
             desc: str = "language model", progress: bool = True) -> dict[str, list[float]]:
    """Train a causal language model for ``steps`` optimisation steps; return per-step logs.

    Step ``s = 1..steps``: draw ``batch_size`` windows of ``context`` + 1 ids
    (:func:`random_windows` with ``generator``), ``loss = lm_loss(model(x), y)``, zero the
    gradients, backward, call ``after_backward(model)`` if given (to read the gradients),
    clip the global gradient norm at ``clip`` if given, ``optimizer.step()``,
    ``scheduler.step()`` if given (schedules are per step, see
    :func:`dlbook.schedules.warmup_lambda_lr`), then ``after_step(s)`` if given.
    The model is used on the device of its parameters. Returns ``{"loss": [...],
    "grad_norm": [...]}``, the gradient norm being measured before clipping.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    device = next(model.parameters()).device
    log: dict[str, list[float]] = {"loss": [], "grad_norm": []}
    model.train()
    for step in tqdm(range(1, steps + 1), desc=desc, leave=False, disable=not progress):
        x, y = random_windows(ids, batch_size, context, generator)
        loss = lm_loss(model(x.to(device)), y.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if after_backward is not None:
            after_backward(model)
        if clip is None:
            norm = schedules.grad_norm(model.parameters())
        else:
            norm = schedules.clip_grad_norm(model.parameters(), clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        log["loss"].append(loss.item())
        log["grad_norm"].append(float(norm))
        if after_step is not None:
            after_step(step)
    return log


@torch.no_grad()
def lm_nll(model: nn.Module, ids: torch.Tensor, n: int, stride: int | None = None,
           batch_size: int = 64) -> float:
    """Mean next-character NLL (nats) of a causal ``model`` (ids ``(B, n)`` -> logits ``(B, n, V)``).

    Windows of ``n`` inputs start every ``stride`` characters (default ``n // 2``); the
    first window scores all its ``n`` targets, every later one only its last ``stride``,
    so each of the ``len(ids) - 1`` targets covered is scored once.
    """
    if ids.dim() != 1:
        raise ValueError(f"ids must be a 1-D stream, got shape {tuple(ids.shape)}")
    stride = n // 2 if stride is None else stride
    if not 1 <= stride <= n:
        raise ValueError(f"stride must lie in 1..n={n}, got {stride}")
    if len(ids) < n + 1:
        raise ValueError(f"a stream of {len(ids)} ids is too short for windows of {n} + 1")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    starts = list(range(0, len(ids) - n, stride))
    total, count = 0.0, 0
    offsets = torch.arange(n + 1)
    for i in range(0, len(starts), batch_size):
        s = torch.tensor(starts[i:i + batch_size])
        rows = ids[s[:, None] + offsets[None, :]].to(device)
        logits = model(rows[:, :-1])
        nll = F.cross_entropy(logits.transpose(1, 2), rows[:, 1:], reduction="none")  # (b, n)
        first = 1 if i == 0 else 0                # the very first window is scored in full
        if first:
            total += nll[0].sum().item()
            count += n
        tail = nll[first:, n - stride:]
        total += tail.sum().item()
        count += tail.numel()
    model.train(was_training)
    return total / count


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """Cut ``(B, H, W)`` images into ``(B, (H/p)(W/p), p*p)`` flattened patches, row-major."""
    if images.dim() != 3:
        raise ValueError(f"images must have shape (B, H, W), got {tuple(images.shape)}")
    _, h, w = images.shape
    if patch < 1 or h % patch or w % patch:
        raise ValueError(f"patch={patch} must divide the image size {h}x{w}")
    x = images.unflatten(1, (h // patch, patch)).unflatten(3, (w // patch, patch))  # B, h', p, w', p
    return x.permute(0, 1, 3, 2, 4).flatten(3).flatten(1, 2)


class PatchClassifier(nn.Module):
    """A tiny Vision Transformer: linear patch embedding + learned positions, blocks, mean pooling.

    forward(images ``(B, H, W)``) -> logits ``(B, n_classes)``; ``H`` and ``W`` must equal
    ``image_size`` and be multiples of ``patch``.
    """

    def __init__(self, cfg: TransformerConfig, image_size: int = 28, patch: int = 7,
                 n_classes: int = 10):
        super().__init__()
        if patch < 1 or image_size % patch:
            raise ValueError(f"patch={patch} must divide image_size={image_size}")
        self.cfg, self.image_size, self.patch = cfg, image_size, patch
        n = (image_size // patch) ** 2
        self.embed = nn.Linear(patch * patch, cfg.d_model)
        self.pos = nn.Parameter(torch.randn(n, cfg.d_model) * 0.02)
        self.transformer = Transformer(cfg)
        self.head = nn.Linear(cfg.d_model, n_classes)

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """The input sequence ``X_0`` ``(B, n, d_model)``."""
        if images.dim() != 3 or images.shape[1:] != (self.image_size, self.image_size):
            raise ValueError(f"expected images (B, {self.image_size}, {self.image_size}), "
                             f"got {tuple(images.shape)}")
        return self.embed(patchify(images, self.patch)) + self.pos

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.transformer(self.tokens(images)).mean(1))


def block_grad_norms(transformer: Transformer) -> list[float]:
    """``||grad||_2`` of all parameters of each block of ``transformer`` (call after backward)."""
    if not isinstance(transformer, Transformer):
        raise TypeError(f"expected a dlbook.transformer.Transformer, got {type(transformer).__name__}")
    norms = []
    for block in transformer.blocks:
        grads = [p.grad for p in block.parameters() if p.grad is not None]
        if not grads:
            raise ValueError("a block has no gradient: call loss.backward() first")
        norms.append(float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads))))
    return norms


def block_from_torch(layer: nn.TransformerEncoderLayer, norm_position: str | None = None) -> Block:
    """A :class:`dlbook.transformer.Block` with the weights of a ``nn.TransformerEncoderLayer``.

    The layer must be ``batch_first`` with ReLU activation; its ``norm_first`` flag selects
    pre-LN (True) or post-LN (False), which ``norm_position`` may only confirm. Dropout is
    copied from ``layer.dropout.p``.
    """
    if not isinstance(layer, nn.TransformerEncoderLayer):
        raise TypeError(f"expected nn.TransformerEncoderLayer, got {type(layer).__name__}")
    if not layer.self_attn.batch_first:
        raise ValueError("the layer must be built with batch_first=True")
    if layer.activation is not F.relu and not isinstance(layer.activation, nn.ReLU):
        raise ValueError("only the ReLU activation of (4.13) is supported")
    position = "pre" if layer.norm_first else "post"
    if norm_position is not None and norm_position != position:
        raise ValueError(f"norm_first={layer.norm_first} means {position!r}-LN, not {norm_position!r}")
    cfg = TransformerConfig(d_model=layer.self_attn.embed_dim, n_heads=layer.self_attn.num_heads,
                            n_layers=1, d_mlp=layer.linear1.out_features, dropout=layer.dropout.p,
                            norm_position=position)
    block = Block(cfg).to(layer.linear1.weight.dtype)
    block.attn = MultiHeadAttention.from_torch(layer.self_attn)
    with torch.no_grad():
        for ours, theirs in ((block.mlp.up, layer.linear1), (block.mlp.down, layer.linear2)):
            ours.weight.copy_(theirs.weight)
            ours.bias.copy_(theirs.bias)
        for ours, theirs in ((block.norm1, layer.norm1), (block.norm2, layer.norm2)):
            ours.weight.copy_(theirs.weight)
            ours.bias.copy_(theirs.bias)
            ours.eps = theirs.eps
    return block
