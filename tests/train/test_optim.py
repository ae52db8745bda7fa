"""train.optim: AdamW (default) or SGD with momentum (CoOp), for the plain engine and in DeepSpeed's config."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tunevl
from tunevl.config import RecipeError
from tunevl.train.config import TrainConfig
from tunevl.train.distributed import DistInfo
from tunevl.train.engine import param_groups, resolve_deepspeed_config
from tunevl.train.optim import make_optimizer


def test_sgd_step_is_torch_sgd_with_momentum_and_l2_decay_on_matrices():
    cfg = TrainConfig(optim="sgd", learning_rate=0.1, sgd_momentum=0.9, weight_decay=0.01)
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    w0, b0 = model.weight.detach().clone(), model.bias.detach().clone()
    opt = make_optimizer(cfg, param_groups(model, cfg.weight_decay))
    assert isinstance(opt, torch.optim.SGD)
    for _ in range(2):
        opt.zero_grad()
        model(torch.ones(1, 3)).sum().backward()
        opt.step()
    # By hand: d(sum)/dW = 1 everywhere, db = 1; momentum buffer m1 = g, m2 = 0.9 m1 + g'.
    g_w1 = torch.ones(2, 3) + 0.01 * w0
    w1 = w0 - 0.1 * g_w1
    g_w2 = torch.ones(2, 3) + 0.01 * w1
    torch.testing.assert_close(model.weight.detach(), w1 - 0.1 * (0.9 * g_w1 + g_w2))
    torch.testing.assert_close(model.bias.detach(), b0 - 0.1 * (1 + 1.9))  # no decay on biases
    assert isinstance(make_optimizer(TrainConfig(), param_groups(model, 0.0)), torch.optim.AdamW)


def test_deepspeed_config_gets_the_recipes_optimizer(tmp_path):
    (tmp_path / "ds.json").write_text('{"zero_optimization": {"stage": 2}}')
    cpu = DistInfo()
    sgd = resolve_deepspeed_config(str(tmp_path / "ds.json"), TrainConfig(optim="sgd", learning_rate=2e-3, weight_decay=5e-4), cpu, False)
    assert sgd["optimizer"] == {"type": "SGD", "params": {"lr": 2e-3, "momentum": 0.9, "weight_decay": 5e-4}}
    assert sgd["zero_allow_untested_optimizer"] is True
    adamw = resolve_deepspeed_config(str(tmp_path / "ds.json"), TrainConfig(), cpu, False)
    assert adamw["optimizer"]["type"] == "AdamW" and adamw["optimizer"]["params"]["torch_adam"] is True
    assert adamw["optimizer"]["params"]["betas"] == [0.9, 0.999]


def test_unknown_optimizer_is_a_recipe_error():
    recipe = tunevl.load_recipe("quickstart", ["train.optim=adam"])
    with pytest.raises(RecipeError, match=r"train\.optim: expected one of 'adamw_torch', 'sgd', got str 'adam'"):
        recipe.validate()
