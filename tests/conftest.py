from __future__ import annotations

import numpy as np
import pytest

from fer_helpers.paths import SAMPLE_FER2013_DIR, SHARED_FER2013_DIR


@pytest.fixture(scope="session")
def fer2013_dir():
    """The real FER2013 folders beside the checkout (../shared/data/fer2013); skip where absent."""
    if not (SHARED_FER2013_DIR / "test").is_dir():
        pytest.skip(f"real FER2013 not found at {SHARED_FER2013_DIR} (CI and development machines have it beside the checkout)")
    return SHARED_FER2013_DIR


@pytest.fixture(scope="session")
def sample_faces():
    """The bundled sample's test faces (real FER2013, 48x48 grey), without its blank image."""
    from fer_helpers.data import load_folder

    ds = load_folder(SAMPLE_FER2013_DIR, "test")
    return ds.take(np.flatnonzero(ds.images.reshape(len(ds), -1).std(axis=1) > 5))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run only where torch sees a CUDA device."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is false here)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
