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

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch import nn

# Cells per chunk: 4096 x 95 fp32 logits is 1.5 MiB, which stays in a core's L2 cache with its temporaries.
CHUNK_CELLS = 4096


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
        # The bias as a weight column on a constant feature: one product per chunk gives logits, another
        # the weight and bias gradients together.
        cells = torch.ones(b * h * w, c + 1, device=features.device)
        cells[:, :c] = features.permute(0, 2, 3, 1).reshape(-1, c)
        wb = torch.cat([weight.float(), bias.float().unsqueeze(1) if bias is not None
                        else weight.new_zeros(classes, 1, dtype=torch.float32)], dim=1)
        targets = codes.reshape(-1).long()
        # Per-cell target weights and the class weights of the smoothing term, over the summed target
        # weights (F.cross_entropy's weighted mean).
        cw = class_weight.to(features.device, torch.float32) if class_weight is not None else None
        cell_w = cw[targets] if cw is not None else torch.ones(len(targets), device=features.device)
        total = cell_w.sum()
        tail = _Tail(cells, wb, targets, cell_w / total, smoothing,
                     (cw if cw is not None else wb.new_ones(classes)) * (smoothing / classes) / total, grads)
        tail.run()
        ctx.mark_non_differentiable(tail.pred)
        # Gradients known in the forward pass, kept on ctx for backward to scale.
        ctx.grads = (tail.grad_x, tail.grad_wb) if grads else None
        ctx.shape, ctx.dtypes = (b, h, w, c), (features.dtype, weight.dtype)
        return tail.loss, tail.pred.view(b, h, w)

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor, _: Any) -> tuple[torch.Tensor | None, ...]:
        grad_x, grad_wb = ctx.grads
        ctx.grads = None
        b, h, w, c = ctx.shape
        features = (grad_x * grad_loss).view(b, h, w, c).permute(0, 3, 1, 2).to(ctx.dtypes[0])
        grad_wb = (grad_wb * grad_loss).to(ctx.dtypes[1])
        bias = grad_wb[:, c] if ctx.needs_input_grad[2] else None
        return features, grad_wb[:, :c], bias, None, None, None, None


class _Tail:
    """The chunked pass over cells [N, C + 1], split into one contiguous range of chunks per torch thread.

    Each range runs in a thread of its own with one intra-op thread: a chunk's kernels are too small to
    share among threads, and on a busy machine every parallel region's barrier waits for a descheduled
    thread. The ranges write disjoint rows of the prediction and the feature gradient; their loss and
    weight-gradient parts are summed at the end.
    """

    def __init__(self, cells: torch.Tensor, wb: torch.Tensor, targets: torch.Tensor, cell_w: torch.Tensor,
                 smoothing: float, smooth: torch.Tensor, grads: bool) -> None:
        self.cells, self.wb, self.targets, self.cell_w = cells, wb, targets, cell_w
        self.smoothing, self.smooth, self.grads = smoothing, smooth, grads
        self.pred = torch.empty_like(targets)
        self.grad_x = cells.new_empty(len(cells), cells.shape[1] - 1) if grads else None

    def run(self) -> None:
        n = len(self.cells)
        chunks = -(-n // CHUNK_CELLS)
        parts = max(1, min(torch.get_num_threads(), chunks))
        bounds = [i * chunks // parts * CHUNK_CELLS for i in range(parts)] + [n]
        ranges = [(lo, min(hi, n)) for lo, hi in zip(bounds, bounds[1:])]
        if parts == 1:
            results = [self.part(*ranges[0])]
        else:
            threads = torch.get_num_threads()
            results = list(_pool(parts).map(lambda r: self.part(*r), ranges))
            # A pool thread's torch.set_num_threads(1) also set the count that threads started later inherit.
            torch.set_num_threads(threads)
        self.loss = torch.stack([loss for loss, _ in results]).sum()
        self.grad_wb = torch.stack([g for _, g in results]).sum(0) if self.grads else None

    def part(self, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Loss and weight gradient of cells lo:hi, writing their predictions and feature gradients."""
        with torch.no_grad():  # grad mode is per thread, and a pool thread's is on
            return self._part(lo, hi)

    def _part(self, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        e, smooth = self.smoothing, self.smooth
        weight = self.wb[:, :-1]
        wbt = self.wb.t()
        loss = self.wb.new_zeros(())
        grad_wb = torch.zeros_like(self.wb) if self.grads else None
        for start in range(lo, hi, CHUNK_CELLS):
            part = slice(start, min(start + CHUNK_CELLS, hi))
            xs, ts, ws = self.cells[part], self.targets[part], self.cell_w[part]
            z = xs @ wbt
            top, self.pred[part] = z.max(dim=1)
            z.sub_(top.unsqueeze(1))
            shifted_target = z.gather(1, ts.unsqueeze(1)).squeeze(1)
            smoothed = z @ smooth if e else None
            p = z.exp_()
            total_p = p.sum(dim=1)
            lse = total_p.log()
            # -log p_target = lse - (z_target - max); the smoothing term is -sum_k smooth_k log p_k.
            loss += (1.0 - e) * torch.dot(ws, lse - shifted_target)
            if e:
                loss += lse.sum() * smooth.sum() - smoothed.sum()
            if not self.grads:
                continue
            # d loss / d z = (1 - e) w_t (p - onehot_t) + sum(smooth) p - smooth, p = softmax.
            row = (1.0 - e) * ws + (smooth.sum() if e else 0.0)
            p.mul_((row / total_p).unsqueeze(1))
            p.scatter_add_(1, ts.unsqueeze(1), (-(1.0 - e) * ws).unsqueeze(1))
            if e:
                p.sub_(smooth)
            torch.mm(p, weight, out=self.grad_x[part])
            grad_wb.addmm_(p.t(), xs)
        return loss, grad_wb


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
