"""Shared fixtures: tiny seeded models, the ``gpu`` marker's skip, one torch thread."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; none is visible here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> Iterator[None]:
    """Tests share two cores with the servers and workers they start: one intra-op
    thread keeps PyTorch from spinning against them (and against the decoder thread)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


class TinyNet(nn.Module):
    """A small CNN with a torchvision-like ``features`` stage and a shared ReLU."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=True)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 12, 3, padding=1, stride=2),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.fc(torch.flatten(self.pool(x), 1))


@pytest.fixture
def tiny_net() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet().eval()


@pytest.fixture
def images() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(3, 3, 32, 32, generator=generator)


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real S3-compatible server (moto's standalone server) for the session."""
    from tests.s3_helpers import s3_server

    yield from s3_server(tmp_path_factory.mktemp("moto"))
