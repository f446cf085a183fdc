"""Stochastic weight averaging (asciiray.train.swa) on a tiny model, no Ray: the average, the BatchNorm
statistics, the learning-rate schedule and an exact round trip through a checkpoint's training state."""

from __future__ import annotations

import pytest
import torch

from asciiray.train.swa import ANNEAL_EPOCHS, WeightAverage


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.ReLU(), torch.nn.Linear(4, 1))


def data(n_batches: int = 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(8, 3, generator=g) * 2 + 1 for _ in range(n_batches)]


def train_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: list[torch.Tensor]) -> None:
    model.train()
    for x in batches:
        optimizer.zero_grad()
        model(x).pow(2).mean().backward()
        optimizer.step()


def params(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_averaged_weights_are_the_mean_of_the_swept_weights():
    model, batches = tiny_model(), data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    swa = WeightAverage(model, optimizer, start=2, lr=0.01)
    swept, lrs = [], []
    for epoch in range(6):
        swa.begin_epoch(epoch)
        lrs.append(optimizer.param_groups[0]["lr"])
        train_epoch(model, optimizer, batches)
        kept = swa.end_epoch(epoch, model, batches)
        if epoch < 2:
            assert kept is model, "before --swa-start the running model is validated and saved"
        else:
            swept.append(params(model))
            assert kept is swa.averaged.module
    assert int(swa.averaged.n_averaged) == 4
    for i, averaged in enumerate(swa.averaged.module.parameters()):
        by_hand = sum(s[i] for s in swept) / len(swept)
        torch.testing.assert_close(averaged.detach(), by_hand)
    assert not all(torch.allclose(a, b) for a, b in zip(swa.averaged.module.parameters(), swept[-1])), \
        "the average is not just the last weights"
    assert lrs[:2] == [0.1, 0.1], "the run's rate until --swa-start"
    assert 0.01 < lrs[2] < 0.1, "then annealed towards the SWA rate"
    assert lrs[1 + ANNEAL_EPOCHS:] == pytest.approx([0.01] * (5 - ANNEAL_EPOCHS)), "and held there"

    # BatchNorm statistics of the averaged model: recomputed over the training batches with its own weights.
    linear, norm = swa.averaged.module[0], swa.averaged.module[1]
    with torch.no_grad():
        features = torch.cat([linear(x) for x in batches])
    torch.testing.assert_close(norm.running_mean, features.mean(0))
    assert not torch.allclose(model[1].running_mean, norm.running_mean)


def test_a_resumed_average_continues_exactly(tmp_path):
    def run(epochs: range, state: dict | None) -> tuple[torch.nn.Module, WeightAverage, torch.optim.Optimizer]:
        model = tiny_model()
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
        swa = WeightAverage(model, optimizer, start=1, lr=0.005)
        if state:
            optimizer.load_state_dict(state["optimizer"])
            swa.load_state_dict(state["swa"], model)
        for epoch in epochs:
            swa.begin_epoch(epoch)
            train_epoch(model, optimizer, data())
            swa.end_epoch(epoch, model, data())
        return model, swa, optimizer

    straight, swa_straight, _ = run(range(5), None)
    first, swa_first, optimizer = run(range(3), None)
    torch.save({"optimizer": optimizer.state_dict(), "swa": swa_first.state_dict(first)}, tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    resumed, swa_resumed, _ = run(range(3, 5), state)
    for a, b in zip(swa_straight.averaged.module.state_dict().values(),
                    swa_resumed.averaged.module.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(params(straight), params(resumed)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert int(swa_resumed.averaged.n_averaged) == 4
