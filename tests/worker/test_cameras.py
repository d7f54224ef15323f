"""Camera identifiers: what a ward camera may be called, and the sentence when it may not."""

from __future__ import annotations

import re

import pytest

from worker._exceptions import InvalidCameraError
from worker.cameras import CAMERA_PATTERN, validate_camera


@pytest.mark.parametrize("good", ["icu-3", "A", "ward4.night", "cam_07", "9", "x" * 64])
def test_accepts_letters_digits_and_separators(good: str) -> None:
    assert validate_camera(good) == good
    assert re.fullmatch(CAMERA_PATTERN, good)  # the published pattern agrees


@pytest.mark.parametrize(
    "bad",
    ["", "x" * 65, "../etc", ".", "..", "-rf", "_x", "a b", "a/b", "a\\b", "ward\n", "é", "a:b"],
)
def test_refuses_anything_else_with_a_sentence(bad: str) -> None:
    with pytest.raises(InvalidCameraError, match="1 to 64 letters, digits") as caught:
        validate_camera(bad)
    assert isinstance(caught.value, ValueError)
    assert not re.fullmatch(CAMERA_PATTERN, bad)


def test_refuses_a_non_string_naming_its_type() -> None:
    with pytest.raises(InvalidCameraError, match="camera int"):
        validate_camera(3)
