"""The VAE's 1x1 output conv, log-softmax, cross entropy and argmax in one pass over cache-sized chunks.

On a CPU the training step of the small preset is bound by memory traffic in
its 95-channel tail: the logits, their log-softmax, the argmax of the
metrics and the backward passes of each are [B, 95, S, S] fp32 tensors (100 MB
at batch 64 on a 64 x 64 grid), each written to and read back from DRAM.
Since the loss is a scalar, its gradient to the logits is known in the forward
pass (weighted softmax minus one-hot), so each chunk of cells goes from the
head's input features to the loss, the argmax and the gradients of the
features, the conv weight and the bias while it sits in cache; backward only
scales them. The result is F.cross_entropy's (class weights, label smoothing)
on the logits of that conv, up to float rounding.
"""

from __future__ import annotations

import logging
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, List, Tuple

import torch
from torch import nn

log = logging.getLogger(__name__)

# Cells per chunk: 2048 x 95 fp32 logits are 0.74 MiB, which stay in a core's L2 cache with their temporaries.
CHUNK_CELLS = 2048


def applies(head: nn.Module) -> bool:
    """Whether `head` is a conv this pass computes: 1x1, stride 1, no padding, dilation or groups."""
    return (isinstance(head, nn.Conv2d) and head.kernel_size == (1, 1) and head.stride == (1, 1)
            and head.padding == (0, 0) and head.dilation == (1, 1) and head.groups == 1)


def head_cross_entropy(features: torch.Tensor, head: nn.Conv2d, codes: torch.Tensor, classes: int,
                       weight: torch.Tensor | None = None,
                       label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean cross entropy, argmax codes [B, S, S]) of the first `classes` logits of head(features).

    `features` [B, C, S, S] are the head's input; channels beyond `classes` (a padded head's) are
    dropped, as if masked to -inf. The loss is differentiable in `features` and the head's
    parameters, in fp32 whatever autocast says.
    """
    if not applies(head):
        raise ValueError(f"the fused head loss needs a 1x1 conv, got {head}")
    bias = head.bias[:classes] if head.bias is not None else None
    grads = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (features, head.weight, bias))
    with torch.autocast(device_type=features.device.type, enabled=False):
        return _HeadCrossEntropy.apply(features, head.weight[:classes, :, 0, 0], bias, codes, weight,
                                       float(label_smoothing), grads)


class _HeadCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                codes: torch.Tensor, class_weight: torch.Tensor | None, smoothing: float,
                grads: bool) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = features.shape
        classes = weight.shape[0]
        # Each piece's features as [C, cells], a view of either memory format (a transposed operand to the
        # products when channels-last): a chunk's logits come out [classes, cells], so every reduction over
        # the classes is an elementwise pass along contiguous rows of cells.
        x = features.float().flatten(2)
        targets = codes.reshape(b, h * w).long()
        # Per-cell target weights and the class weights of the smoothing term, over the summed target
        # weights (F.cross_entropy's weighted mean).
        cw = class_weight.to(features.device, torch.float32) if class_weight is not None else None
        cell_w = cw[targets] if cw is not None else torch.ones(targets.shape, device=features.device)
        total = cell_w.sum()
        smooth = (cw if cw is not None else x.new_ones(classes)) * (smoothing / classes) / total
        bias = bias.float() if bias is not None else x.new_zeros(classes)
        tail = _Tail(x, weight.float(), bias, targets, cell_w / total, smoothing, smooth, grads)
        tail.run()
        ctx.mark_non_differentiable(tail.pred)
        # Gradients known in the forward pass, kept on ctx for backward to scale.
        ctx.grads = (tail.grad_x, tail.grad_w, tail.grad_b) if grads else None
        ctx.shape, ctx.dtypes = features.shape, (features.dtype, weight.dtype)
        return tail.loss, tail.pred.view(b, h, w)

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor, _: Any) -> tuple[torch.Tensor | None, ...]:
        grad_x, grad_w, grad_b = ctx.grads
        ctx.grads = None
        features = grad_x.mul_(grad_loss).unflatten(2, ctx.shape[2:]).to(ctx.dtypes[0])
        bias = (grad_b.view(-1) * grad_loss).to(ctx.dtypes[1]) if ctx.needs_input_grad[2] else None
        return features, (grad_w * grad_loss).to(ctx.dtypes[1]), bias, None, None, None, None


class _Tail:
    """The chunked pass over pieces' features [B, C, cells], split into one contiguous range of chunks per
    torch thread.

    A chunk is up to CHUNK_CELLS cells of one piece. Each range of chunks runs in a thread of its own with one
    intra-op thread: a chunk's kernels are too small to share among threads, and on a busy machine every
    parallel region's barrier waits for a descheduled thread. The ranges write disjoint parts of the
    prediction and the feature gradient; their loss and weight-gradient parts are summed at the end.
    """

    def __init__(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, targets: torch.Tensor,
                 cell_w: torch.Tensor, smoothing: float, smooth: torch.Tensor, grads: bool) -> None:
        self.x, self.weight, self.bias, self.targets, self.cell_w = x, weight, bias.view(-1, 1), targets, cell_w
        self.smoothing, self.smooth, self.grads = smoothing, smooth.view(-1, 1), grads
        self.pred = torch.empty_like(targets)
        # x's strides: the features' memory format (an empty stand-in without gradients, for the script's types)
        self.grad_x = torch.empty_like(x) if grads else x.new_empty(0)
        # Class k's rank from the end: the largest rank among the maxima is the first of them.
        self.rank = torch.arange(len(weight), 0, -1, dtype=torch.float32, device=x.device).view(-1, 1)

    def run(self) -> None:
        b, _, n = self.x.shape
        chunks = [(i, j, min(j + CHUNK_CELLS, n)) for i in range(b) for j in range(0, n, CHUNK_CELLS)]
        parts = max(1, min(torch.get_num_threads(), len(chunks)))
        bounds = [i * len(chunks) // parts for i in range(parts + 1)]
        ranges = [chunks[lo:hi] for lo, hi in zip(bounds, bounds[1:])]
        if parts == 1:
            results = [self.part(ranges[0])]
        else:
            threads = torch.get_num_threads()
            results = list(_pool(parts).map(self.part, ranges))
            # A pool thread's torch.set_num_threads(1) also set the count that threads started later inherit.
            torch.set_num_threads(threads)
        self.loss = torch.stack([r[0] for r in results]).sum()
        if self.grads:
            self.grad_w = torch.stack([r[1] for r in results]).sum(0)
            self.grad_b = torch.stack([r[2] for r in results]).sum(0)

    def part(self, chunks: list[tuple[int, int, int]]) -> tuple[torch.Tensor, ...]:
        """Loss and weight and bias gradients of `chunks`, writing their predictions and feature gradients."""
        with torch.no_grad():  # grad mode is per thread, and a pool thread's is on
            return _chunk_pass(self.x, self.weight, self.bias, self.targets, self.cell_w, self.rank, self.pred,
                               self.grad_x, self.smoothing, self.smooth, self.grads, CHUNK_CELLS, chunks)


def _chunk_pass(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, targets: torch.Tensor,
                cell_w: torch.Tensor, rank: torch.Tensor, pred: torch.Tensor, grad_x: torch.Tensor, e: float,
                smooth: torch.Tensor, grads: bool, chunk_cells: int,
                chunks: List[Tuple[int, int, int]]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss and weight and bias gradients of `chunks`, writing their predictions and feature gradients."""
    classes, features = weight.shape[0], weight.shape[1]
    loss = x.new_zeros(())
    # The bias as one more input feature that is always 1: the logits are one product, with no pass to add
    # the bias.
    weight_bias = torch.cat([weight, bias], dim=1)
    # Under 16 rows with the bias, the weight and bias gradients are one product too, summed transposed,
    # [features + 1, classes] (MKL: 22 against 42 us a chunk for 9 rows in the other order). From 16 rows on
    # that order takes twice as long, and the weight gradient is the product with the chunk's features as they
    # lie (channels-last: [cells, features]), the bias gradient a sum (41 against 70 us for 16 features, 61
    # against 113 for 32).
    together = features + 1 < 16
    grad_weight_bias = x.new_zeros(features + 1, classes)
    grad_weight = x.new_zeros(classes, features)
    grad_bias = x.new_zeros(classes)
    inputs = x.new_ones(features + 1, chunk_cells)
    weight_t = weight.t()
    smooth_sum = float(smooth.sum()) if e != 0.0 else 0.0
    for chunk in chunks:
        i, lo, hi = chunk
        xs = inputs[:, :hi - lo]
        xs[:features].copy_(x[i, :, lo:hi])
        ts, ws = targets[i, lo:hi].unsqueeze(0), cell_w[i, lo:hi]
        z = torch.mm(weight_bias, xs)  # [classes, cells]
        z.sub_(z.amax(dim=0))
        # The prediction is the first class at the maximum, where the shifted logit is exactly 0 and every
        # other one is negative: scaled by 2^126, any below -2^-119 falls below every rank (or to -inf), so the
        # largest of rank + 2^126 z is the rank of the first maximum (one pass and a reduction).
        first = torch.add(rank, z, alpha=2.0 ** 126).amax(dim=0)
        pred[i, lo:hi] = (classes - first.long()).clamp_(0, classes - 1)  # NaN logits: still a class
        shifted_target = z.gather(0, ts).squeeze(0)
        smoothed = (z * smooth).sum() if e != 0.0 else loss.new_zeros(())
        p = z.exp_()
        total_p = p.sum(dim=0)
        lse = total_p.log()
        # -log p_target = lse - (z_target - max); the smoothing term is -sum_k smooth_k log p_k.
        loss += (1.0 - e) * torch.dot(ws, lse - shifted_target)
        if e != 0.0:
            loss += lse.sum() * smooth_sum - smoothed
        if grads:
            # d loss / d z = (1 - e) w_t (p - onehot_t) + sum(smooth) p - smooth, p = softmax.
            row = (1.0 - e) * ws + smooth_sum
            p.mul_(row / total_p)
            p.scatter_add_(0, ts, (-(1.0 - e) * ws).unsqueeze(0))
            if e != 0.0:
                p.sub_(smooth)
            torch.mm(weight_t, p, out=grad_x[i, :, lo:hi])
            if together:
                grad_weight_bias.addmm_(xs, p.t())
            else:
                grad_weight.addmm_(p, x[i, :, lo:hi].t())
                grad_bias.add_(p.sum(dim=1))
    if together:
        return loss, grad_weight_bias[:features].t(), grad_weight_bias[features:].t()
    return loss, grad_weight, grad_bias.unsqueeze(1)


def _script(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` compiled by TorchScript, which runs its loop of small kernels without the interpreter's cost per
    operator or its global lock (the pool's threads overlap); `fn` itself where TorchScript is missing."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is in maintenance; nothing that
        try:                                                 # replaces it runs without a C++ compiler
            return torch.jit.script(fn)
        except Exception as error:  # no TorchScript in this torch, or no source files to compile (a zipped app)
            log.warning("the fused head loss runs uncompiled: %s", error)
            return fn


_chunk_pass = _script(_chunk_pass)


_POOL: ThreadPoolExecutor | None = None


def _pool(threads: int) -> ThreadPoolExecutor:
    """A process-wide pool of at least `threads` threads (kept: a thread per step would cost its start)."""
    global _POOL
    if _POOL is None or _POOL._max_workers < threads:
        _POOL = ThreadPoolExecutor(threads, thread_name_prefix="head-loss", initializer=_one_thread)
    return _POOL


def _one_thread() -> None:
    """One intra-op thread for this thread: set, then fixed by a first parallel op (a thread's first
    parallel op would otherwise take the process-wide count, which the caller restores)."""
    torch.set_num_threads(1)
    torch.zeros(1).add_(1)
