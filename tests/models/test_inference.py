"""Scoring copies of a model: folded batch norms keep the outputs, the original is untouched."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import Tensor, nn

from models.backbones import ARCHITECTURES, build_backbone
from models.inference import Autocast, fold_batchnorm, prepare_for_inference


def _randomise_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every batch norm statistics and affine terms far from the identity."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
            n = module.num_features
            assert module.running_var is not None
            module.running_mean.copy_(torch.rand(n, generator=generator) * 2 - 1)
            module.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
            if module.affine:
                module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.data.copy_(torch.rand(n, generator=generator) - 0.5)
    return model.eval()


def _norm_count(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_folding_keeps_every_backbones_outputs(arch: str) -> None:
    torch.manual_seed(0)
    model = _randomise_norms(build_backbone(arch, num_classes=5)).double()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    norms = _norm_count(model)
    folded, count = fold_batchnorm(model)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected, got = model(x), folded(x)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
    assert count > 0
    assert _norm_count(folded) == norms - count
    if arch == "densenet121":  # pre-activation norms follow a concatenation: kept
        assert _norm_count(folded) > 0
    else:
        assert _norm_count(folded) == 0
    # the original is untouched
    assert _norm_count(model) == norms
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


class _Branchy(nn.Module):
    """A conv whose output feeds a norm and a skip; a norm with no running statistics;
    Conv1d/Conv3d pairs; a conv with a bias before its norm."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Conv2d(3, 4, 3, padding=1)
        self.shared_norm = nn.BatchNorm2d(4)
        self.stateless = nn.Conv2d(4, 4, 1)
        self.stateless_norm = nn.BatchNorm2d(4, track_running_stats=False)
        self.biased = nn.Conv2d(4, 4, 3, padding=1, bias=True)
        self.biased_norm = nn.BatchNorm2d(4)
        self.conv1d = nn.Conv1d(4, 6, 3, padding=1)
        self.norm1d = nn.BatchNorm1d(6)
        self.conv3d = nn.Conv3d(1, 2, 3, padding=1)
        self.norm3d = nn.BatchNorm3d(2, affine=False)

    def forward(self, x: Tensor) -> Tensor:
        shared = self.shared(x)
        y = self.shared_norm(shared) + shared  # the conv has two users: not folded
        y = self.stateless_norm(self.stateless(y))  # batch statistics: not folded
        y = self.biased_norm(self.biased(y))
        line = self.norm1d(self.conv1d(y.mean(dim=3)))
        volume = self.norm3d(self.conv3d(y.unsqueeze(1)))
        return line.mean(dim=(1, 2)) + volume.mean(dim=(1, 2, 3, 4))


def test_folding_skips_what_it_must_and_folds_the_rest() -> None:
    torch.manual_seed(1)
    model = _randomise_norms(_Branchy()).double()
    folded, count = fold_batchnorm(model)
    assert count == 3  # biased, 1-D and 3-D (affine=False) pairs
    assert isinstance(folded.get_submodule("shared_norm"), nn.BatchNorm2d)
    assert isinstance(folded.get_submodule("stateless_norm"), nn.BatchNorm2d)
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-9, atol=1e-9)


class _DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.BatchNorm2d(4)

    def forward(self, x: Tensor) -> Tensor:
        if x.sum() > 0:  # symbolic tracing cannot follow this
            x = -x
        return self.norm(self.conv(x)).mean(dim=(2, 3))


def test_an_untraceable_model_comes_back_unfolded_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = _randomise_norms(_DataDependent())
    with caplog.at_level(logging.INFO, logger="models.inference"):
        folded, count = fold_batchnorm(model)
    assert count == 0
    assert folded is not model
    assert "cannot be traced" in caplog.text
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x))


def test_prepare_for_inference_casts_freezes_and_stays_close() -> None:
    torch.manual_seed(2)
    model = _randomise_norms(build_backbone("resnet18", num_classes=4))
    prepared = prepare_for_inference(model, dtype=torch.bfloat16, channels_last=True)
    assert not prepared.training
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in prepared.parameters())
    conv = prepared.get_submodule("conv1")
    assert isinstance(conv, nn.Conv2d)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(p.requires_grad and p.dtype == torch.float32 for p in model.parameters())
    x = torch.rand(4, 3, 96, 96)
    with torch.inference_mode():
        expected = model(x).softmax(dim=1)
        got = prepared(x.to(torch.bfloat16)).float().softmax(dim=1)
    assert (got - expected).abs().max().item() < 0.03  # bfloat16 keeps 8 bits of mantissa


def test_prepare_for_inference_in_mixed_precision_keeps_float32_weights() -> None:
    torch.manual_seed(3)
    model = _randomise_norms(build_backbone("resnet18", num_classes=4))
    prepared = prepare_for_inference(model, autocast=torch.bfloat16, channels_last=True)
    assert isinstance(prepared, Autocast) and not prepared.training
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in prepared.parameters())
    x = torch.rand(4, 3, 96, 96)
    with torch.inference_mode():
        expected = model(x).softmax(dim=1)
        logits = prepared(x)  # float32 input: autocast casts on the way
        got = logits.float().softmax(dim=1)
    assert logits.dtype == torch.bfloat16  # it did run in reduced precision
    assert (got - expected).abs().max().item() < 0.03
    with pytest.raises(ValueError, match="exclude each other"):
        prepare_for_inference(model, dtype=torch.bfloat16, autocast=torch.bfloat16)
