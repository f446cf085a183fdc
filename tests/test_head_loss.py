"""The fused head loss (asciiray.train.head_loss) computes what the materialised tail computes."""

from __future__ import annotations

import copy
import threading

import pytest
import torch
import torch.nn.functional as F

from asciiray.models import get_preset
from asciiray.train import head_loss
from tests.conftest import batches, vae_task


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format])
@pytest.mark.parametrize("features", [8, 16])
def test_equals_cross_entropy_of_the_conv(monkeypatch, padded, weighted, smoothing, memory_format, features):
    """Loss, argmax and gradients equal F.cross_entropy of the 1x1 conv's first 95 logits, in float64,
    across chunk and thread boundaries (chunks of 100 cells over 2 threads), for features in either memory
    format and either order of the weight gradient's product (under 16 rows with the bias, and not); the
    features' gradient keeps theirs."""
    monkeypatch.setattr(head_loss, "CHUNK_CELLS", 100)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        g = torch.Generator().manual_seed(0)
        head = torch.nn.Conv2d(features, 95 + padded, 1).double()
        x = torch.randn(3, features, 16, 16, dtype=torch.float64, generator=g).contiguous(
            memory_format=memory_format).requires_grad_()
        codes = torch.randint(0, 95, (3, 16, 16), generator=g)
        weight = torch.rand(95, generator=g) + 0.1 if weighted else None
        logits = head(x)[:, :95]
        expected = F.cross_entropy(logits, codes, weight=None if weight is None else weight.double(),
                                   label_smoothing=smoothing)
        loss, pred = head_loss.head_cross_entropy(x, head, codes, 95, weight, smoothing)
        params = [x, head.weight, head.bias]
        got = torch.autograd.grad(3 * loss, params)
        for grad, want in zip(got, torch.autograd.grad(3 * expected, params)):
            torch.testing.assert_close(grad, want, rtol=1e-5, atol=1e-7)
        assert got[0].is_contiguous(memory_format=memory_format)
        torch.testing.assert_close(loss.double(), expected, rtol=1e-6, atol=0)
        assert torch.equal(pred, logits.argmax(dim=1))
        later = []
        thread = threading.Thread(target=lambda: later.append(torch.ones(10 ** 6).add_(1) is not None
                                                               and torch.get_num_threads()))
        thread.start()
        thread.join()
        assert torch.get_num_threads() == 2 and later == [2], "the pool's one-thread setting leaked"
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("weighted, latent_map", [(False, False), (True, False), (True, True)])
def test_the_vae_step_computes_what_the_materialised_step_did(tmp_path, weighted, latent_map):
    """Tiny preset (and with a latent map): the task's step with the fused head gives the loss, every metric
    sum and every gradient of the step that applies the head conv, log-softmax, cross entropy and argmax one
    after the other."""
    task = vae_task(tmp_path, image_recon_loss_coeff=0.0)
    if latent_map:
        task.model_config = get_preset("tiny", map_channels=4, map_size=8)
    if weighted:
        task.weight = torch.rand(95, generator=torch.Generator().manual_seed(1)) + 0.1
    else:
        task.weight = None
    torch.manual_seed(0)
    model = task.build_model()
    assert head_loss.applies(model.decoder[-1])
    codes = batches(1)[0]
    results = []
    for fused in (False, True):
        task.fused_head = fused
        run = copy.deepcopy(model)
        torch.manual_seed(1)  # the same reparameterisation noise
        loss, stats = task.step(run, codes, 0)
        loss.backward()
        results.append((loss, stats, {n: p.grad for n, p in run.named_parameters()}))
    (loss, stats, grads), (fused_loss, fused_stats, fused_grads) = results
    torch.testing.assert_close(fused_loss, loss, rtol=1e-5, atol=1e-6)
    assert fused_stats.keys() == stats.keys()
    for name in stats:
        torch.testing.assert_close(fused_stats[name], stats[name], rtol=1e-5, atol=1e-6, msg=name)
    for name in grads:
        torch.testing.assert_close(fused_grads[name], grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_a_tie_predicts_the_first_of_the_maxima():
    """Like torch.argmax: cells whose largest logits are equal predict the first of those characters."""
    head = torch.nn.Conv2d(2, 95, 1, bias=False)
    with torch.no_grad():
        head.weight.zero_()
        head.weight[[7, 30, 60], 0] = 1.0  # feature 0 ties characters 7, 30 and 60
        head.weight[[40, 41], 1] = 1.0  # feature 1 ties 40 and 41
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 2.0], [0.0, 0.0]]).t().reshape(1, 2, 2, 2)
    _, pred = head_loss.head_cross_entropy(x, head, torch.zeros(1, 2, 2, dtype=torch.long), 95)
    assert pred.flatten().tolist() == [7, 40, 40, 0]
    assert torch.equal(pred, head(x).argmax(dim=1))


def test_needs_a_1x1_conv():
    assert head_loss.applies(torch.nn.Conv2d(8, 95, 1))
    assert not head_loss.applies(torch.nn.Conv2d(8, 95, 3, padding=1))
    with pytest.raises(ValueError, match="1x1 conv"):
        head_loss.head_cross_entropy(torch.zeros(1, 8, 4, 4), torch.nn.Conv2d(8, 95, 3, padding=1),
                                     torch.zeros(1, 4, 4, dtype=torch.long), 95)
