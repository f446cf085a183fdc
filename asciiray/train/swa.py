"""Stochastic weight averaging (--swa-start, --swa-lr) for the shared training loop.

After the first `start` epochs, the learning rate is annealed to the SWA rate
(torch.optim.swa_utils.SWALR, stepped once per epoch) and the running weights
are averaged at the end of every later epoch (AveragedModel). The averaged
model's BatchNorm statistics are recomputed on the worker's training shard
(update_bn, then averaged across DDP workers) before it is validated and
checkpointed, so every checkpoint of an SWA epoch holds weights ready for
inference. Its training state holds what an exact resume needs: the running
weights, the averaged model (with its n_averaged) and the SWALR schedule.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch.optim.swa_utils import SWALR, AveragedModel, update_bn

# Epochs over which SWALR anneals (cosine) from the run's learning rate to the SWA rate.
ANNEAL_EPOCHS = 2


class WeightAverage:
    """The averaged model and its learning-rate schedule, driven by the loop at three points."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, start: int, lr: float) -> None:
        self.start = start
        self.averaged = AveragedModel(model)
        self.schedule = SWALR(optimizer, swa_lr=lr, anneal_epochs=ANNEAL_EPOCHS, anneal_strategy="cos")

    @classmethod
    def of_run(cls, start: int | None, lr: float | None, model: torch.nn.Module,
               optimizer: torch.optim.Optimizer) -> WeightAverage | None:
        """The run's averager, or None when --swa-start is not given (lr None: keep the run's rate)."""
        if start is None:
            return None
        return cls(model, optimizer, start, lr if lr is not None else optimizer.param_groups[0]["lr"])

    def begin_epoch(self, epoch: int) -> None:
        """Anneal the learning rate one epoch further towards the SWA rate in every SWA epoch."""
        if epoch >= self.start:
            with warnings.catch_warnings():
                # A resumed run steps the schedule before its new optimizer has stepped: expected here.
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)`")
                self.schedule.step()

    def end_epoch(self, epoch: int, model: torch.nn.Module, batches: Iterable[torch.Tensor]) -> torch.nn.Module:
        """After an epoch's training: the model to validate, show and checkpoint.

        Before --swa-start that is the running `model`; from then on the weights are averaged in and
        the averaged model, its BatchNorm statistics recomputed on `batches`, is returned.
        """
        if epoch < self.start:
            return model
        self.averaged.update_parameters(model)
        update_bn(batches, self.averaged.module)
        _average_buffers(self.averaged.module)
        return self.averaged.module

    def state_dict(self, model: torch.nn.Module) -> dict[str, Any]:
        """What a resume needs: tensors and plain values only (read back with weights_only=True)."""
        return {"running": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "averaged": {k: v.detach().cpu() for k, v in self.averaged.state_dict().items()},
                "schedule": self.schedule.state_dict()}

    def load_state_dict(self, state: dict[str, Any], model: torch.nn.Module) -> None:
        """Restore the running weights (the checkpoint's model file holds the averaged ones), the average and
        the schedule; the optimizer's own state (its learning rate included) is restored by the loop."""
        model.load_state_dict(state["running"])
        self.averaged.load_state_dict(state["averaged"])
        self.schedule.load_state_dict(state["schedule"])


def _average_buffers(model: torch.nn.Module) -> None:
    """Average the recomputed BatchNorm statistics over DDP workers, so each worker holds the same model."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
            for buffer in (module.running_mean, module.running_var):
                dist.all_reduce(buffer)
                buffer /= dist.get_world_size()
