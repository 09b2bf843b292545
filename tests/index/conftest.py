from __future__ import annotations

import numpy as np
import pytest

from tests.index._data import make_corpus


@pytest.fixture(scope="session")
def corpus() -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    return make_corpus(400)
