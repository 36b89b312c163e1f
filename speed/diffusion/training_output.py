"""The losses of one training call of the model, shared by both objectives (`GaussianDiffusion`
and `speed.flow.Interpolant`): a plain backbone returns its prediction; a masked backbone (MaskDiT,
MDT: `speed.models.masking`) returns a dict that says where its loss is taken and what it adds.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch

from speed.diffusion.losses import masked_mean_flat, mean_flat

PREDICTION_KEYS = ("output", "masked_output")  # a masked backbone's predictions of x_t's target
Reduce = Callable[[torch.Tensor], torch.Tensor]  # per-element terms [N, ...] -> [N]
# prediction [N, ...], reduce -> {"mse": [N], maybe "vb": [N]}
PredictionTerms = Callable[[torch.Tensor, Reduce], dict]


def output_terms(model_output, prediction_terms: PredictionTerms, weights=None) -> dict:
    """Per-sample loss terms of one model call, with their sum under "loss".

    `model_output` is a tensor (the prediction) or a masked backbone's training output, a dict:
      "output": the prediction, its terms averaged over "visible" [N, 1, ...] (1 = counted) when
        given (MaskDiT: the visible patches), else over every element;
      "masked_output" (optional): a second prediction of the same x_t, whose terms add to the loss
        as "masked_mse" / "masked_vb" (MDT's masked pass, Gao et al. 2023);
      "losses" (optional): name -> [N] extra terms added as they are (MaskDiT's weighted MAE).
    `prediction_terms(prediction, reduce)` gives one prediction's terms, each averaged to [N] by
    `reduce` (over the counted elements). The timestep weights [N] multiply every MSE term, never
    the VB or the extra losses.
    """
    out = model_output if isinstance(model_output, dict) else {"output": model_output}
    output, masked_output = PREDICTION_KEYS
    visible = out.get("visible")
    terms = prediction_terms(
        out[output], mean_flat if visible is None else partial(masked_mean_flat, weight=visible)
    )
    if masked_output in out:
        extra = prediction_terms(out[masked_output], mean_flat)
        terms.update({f"masked_{name}": value for name, value in extra.items()})
    loss = 0.0
    for name, value in terms.items():
        weighted = name.endswith("mse") and weights is not None
        loss = loss + (weights * value if weighted else value)
    for name, value in out.get("losses", {}).items():
        terms[name] = value
        loss = loss + value
    terms["loss"] = loss
    return terms
