"""Reconstruction metrics on hand-made grids: blank, over-inked, perfect and half-right output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asciiray.charset import NUM_CHARS, SPACE
import math

from asciiray.metrics import ratios, reconstruction_sums, score
from asciiray.models import VAE, get_preset, one_hot

A, B = ord("a") - 32, ord("b") - 32


def logp_of(codes: torch.Tensor) -> torch.Tensor:
    """Scores whose argmax is `codes`."""
    return torch.log_softmax(100.0 * one_hot(codes), dim=1)


def metrics(pred: torch.Tensor, codes: torch.Tensor) -> dict[str, float]:
    return ratios(reconstruction_sums(logp_of(pred), codes))


# Two 4x4 pieces: 4 and 2 inked cells.
INPUT = torch.full((2, 4, 4), SPACE)
INPUT[0, 0, :] = A
INPUT[1, 1, :2] = B


def test_blank_output_scores_zero_ink_and_collapses():
    m = metrics(torch.full_like(INPUT, SPACE), INPUT)
    assert m["char_acc"] == pytest.approx(26 / 32)
    assert m["ink_recall"] == m["nonspace_acc"] == 0
    assert m["ink_f1"] == 0 and m["ink_ratio"] == 0
    assert math.isnan(m["ink_precision"]), "nothing predicted inked: 0 / 0 is no figure"
    assert m["near_collapse"] == 1 and m["space_collapse"] == 1


def test_over_inked_output_has_full_recall_but_low_precision():
    pred = INPUT.clone()
    pred[pred == SPACE] = A  # every cell inked; the input's ink is all right
    m = metrics(pred, INPUT)
    assert m["ink_recall"] == 1
    assert m["ink_precision"] == pytest.approx(6 / 32)
    assert m["ink_f1"] == pytest.approx(2 * 6 / (32 + 6))
    assert m["ink_ratio"] == pytest.approx(32 / 6)
    assert m["char_acc"] == pytest.approx(6 / 32)
    assert m["near_collapse"] == 0 and m["space_collapse"] == 0


def test_perfect_output():
    m = metrics(INPUT, INPUT)
    assert all(m[k] == 1 for k in ("char_acc", "ink_recall", "nonspace_acc", "ink_precision", "ink_f1", "ink_ratio"))
    assert m["near_collapse"] == 0 and m["space_collapse"] == 0


def test_half_right_output():
    pred = INPUT.clone()
    pred[0, 0, :2] = B  # 2 of the 4 inked cells wrong, still inked
    pred[1, 1, 1] = SPACE  # 1 of the 2 dropped
    pred[1, 3, 3] = A  # one stray cell inked
    m = metrics(pred, INPUT)
    tp, pred_inked, inked = 3, 6, 6
    assert m["ink_recall"] == pytest.approx(tp / inked)
    assert m["ink_precision"] == pytest.approx(tp / pred_inked)
    assert m["ink_f1"] == pytest.approx(2 * tp / (pred_inked + inked))
    p, r = tp / pred_inked, tp / inked
    assert m["ink_f1"] == pytest.approx(2 * p * r / (p + r)), "F1 is the harmonic mean"
    assert m["ink_ratio"] == 1
    assert m["char_acc"] == pytest.approx((32 - 4) / 32)
    assert m["near_collapse"] == 0 and m["space_collapse"] == 0


def test_near_collapse_counts_a_stray_character_that_space_collapse_misses():
    codes = torch.full((3, 8, 8), SPACE)
    codes[0, :3, :] = A  # 24 inked cells
    codes[1, 0, :4] = A  # 4 inked cells
    pred = torch.full_like(codes, SPACE)
    pred[0, 0, 0] = A  # 1 of 24: under 10 %
    pred[1, 0, :1] = A  # 1 of 4: 25 %, not collapsed
    # piece 2: blank input, blank output: neither
    m = metrics(pred, codes)
    assert m["near_collapse"] == pytest.approx(1 / 3)
    assert m["space_collapse"] == 0


def test_pairs_add_across_batches_and_stay_float64():
    pred = INPUT.clone()
    pred[0, 0, :2] = B
    whole = reconstruction_sums(logp_of(pred), INPUT)
    parts = [reconstruction_sums(logp_of(pred[i:i + 1]), INPUT[i:i + 1]) for i in range(2)]
    for name, pair in whole.items():
        assert pair.dtype == torch.float64 and pair.shape == (2,)
        assert torch.equal(pair, parts[0][name] + parts[1][name]), name
    assert whole["ink_f1"].tolist() == [2 * 4, 6 + 6]


def test_score_a_model_over_batches():
    torch.manual_seed(0)
    cfg = get_preset("tiny")
    model = VAE(cfg)
    codes = torch.randint(0, NUM_CHARS, (6, cfg.grid, cfg.grid), dtype=torch.uint8)
    scored = score(model, codes.split(4))
    with torch.no_grad():
        logp, _, _ = model.eval()(codes)
    assert scored == pytest.approx(ratios(reconstruction_sums(logp, codes)))


def test_a_model_is_scored_on_its_runs_validation_pieces(tmp_path):
    import dataclasses

    from asciiray import charset, data
    from asciiray.corpus import CorpusBuilder
    from asciiray.train import checkpoint
    from asciiray.inference import TrainedVAE

    builder = CorpusBuilder()
    for i in range(60):
        word = chr(97 + i % 26) * (i % 7 + 8)
        assert builder.add(f"+{'-' * len(word)}+\n|{word}|\n+{i:-<{len(word)}}+", ["test"], "files") is None
    builder.write(str(tmp_path / "corpus"))
    uri = str(tmp_path / "corpus")
    plan = data.plan(uri, 16, 0.3, max_pieces=40)
    texts = data.validation_pieces(uri, 16, 0.3, 0, max_pieces=40)
    assert len(texts) == plan.val, "the same pieces the run validated on"
    assert len(data.validation_pieces(uri, 16, 0.3, 0)) > plan.val

    torch.manual_seed(0)
    cfg = get_preset("tiny")
    model = VAE(cfg).eval()
    run = tmp_path / "ckpt"
    run.mkdir()
    checkpoint.save(run, model, {"kind": "vae", "model": dataclasses.asdict(cfg), "corpus": uri,
                                 "config": {"data": {"validation_prop": 0.3, "max_pieces": 40}}})
    codes = torch.from_numpy(np.stack([charset.encode(t, 16) for t in texts]))
    assert TrainedVAE.load(str(run), "cpu").score(batch_size=3) == pytest.approx(score(model, [codes]))


def test_a_search_may_optimise_every_metric_and_loss_term_with_a_direction():
    from asciiray.losses import compute_losses
    from asciiray.metrics import BETTER
    from asciiray.tune.spec import LOSS_TERMS, METRICS

    logp = logp_of(INPUT)
    assert set(BETTER) == set(reconstruction_sums(logp, INPUT)), "every metric says which way it improves"
    zeros = torch.zeros(2, 4)
    assert set(LOSS_TERMS) == set(compute_losses((logp, zeros, zeros), INPUT))
    assert {name.split("/", 1)[1] for name in METRICS} == {*LOSS_TERMS, *BETTER} - {"ink_ratio"}
    assert METRICS["val/ink_f1"] == "max" and METRICS["train/kl"] == "min"
