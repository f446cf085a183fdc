"""`--compile` (asciiray.train.compiled): compiled steps match eager ones, tau changes do not recompile, and a
machine that cannot compile gets a one-line error before anything is written."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch

from asciiray.errors import UserError
from asciiray.train import runner
from asciiray.train.compiled import check_available
from asciiray.train.step import TrainStep, make_adam
from tests.conftest import train_config, vae_task


def losses(tmp_path, compiled: bool, data: list[torch.Tensor], epochs: list[int]) -> list[float]:
    task = vae_task(tmp_path, image_recon_loss_coeff=0.5, gumbel_tau_r=0.5)
    torch.manual_seed(0)
    model = task.build_model()
    params = list(model.parameters())
    # aot_eager: dynamo capture and AOT autograd without building C++ kernels (inductor takes minutes on a
    # CPU; benchmarks/gpu_check.py runs it).
    trained = task.compiled(model, "aot_eager") if compiled else model
    step = TrainStep(task.step, trained, make_adam(params, 1e-3, torch.device("cpu")),
                     torch.amp.GradScaler("cpu", enabled=False), 1.0, nullcontext, torch.device("cpu"))
    out = []
    for i, (codes, epoch) in enumerate(zip(data, epochs)):
        torch.manual_seed(100 + i)  # the same noise for both sides (the compiled side draws it as eager does)
        out.append(float(step(codes, epoch)["loss"][0]) / len(codes))
        if compiled and i == 0:
            torch._dynamo.config.error_on_recompile = True  # a later epoch's tau must not recompile
    return out


def test_compiled_steps_match_eager_and_a_new_tau_does_not_recompile(tmp_path, monkeypatch):
    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", False)
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    data = [torch.randint(0, 95, (8, 16, 16), dtype=torch.uint8, generator=g) for _ in range(3)]
    epochs = [0, 1, 2]  # tau 1.0, 0.61, 0.5
    eager = losses(tmp_path, False, data, epochs)
    compiled = losses(tmp_path, True, data, epochs)
    torch._dynamo.reset()
    assert compiled == pytest.approx(eager, rel=1e-4), (compiled, eager)
    assert eager[0] != eager[2]  # the steps trained: later losses differ from the first


def test_no_compiler_is_a_one_line_error_before_the_run_exists(tmp_path, monkeypatch):
    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", (None, str(tmp_path / "no-such-c++")))
    with pytest.raises(UserError, match="--compile on a CPU needs a C\\+\\+ compiler.*install g\\+\\+"):
        check_available(gpu=False)
    cfg = train_config(tmp_path, "unused", compile=True, use_gpu=False)
    with pytest.raises(UserError, match="--compile"):
        runner.prepare(cfg, "vae", lambda c: 16)
    assert not (tmp_path / "runs").exists()
