"""The training image of a baked project, built once per session (built_image.py)."""

from __future__ import annotations

import pytest
from built_image import BuiltImage, build_image


@pytest.fixture(scope="session")
def built_image(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    return build_image(tmp_path_factory.mktemp("container"))
