"""Worker processes and inference copies give the same numbers as the plain code."""

import numpy as np
import pandas as pd
import pytest
import torch

from fer_helpers import cnn, compute, degrade, landmarks, quality, restore, unet
from fer_helpers.paths import SHARED_DIR


@pytest.fixture
def two_workers(monkeypatch):
    monkeypatch.setattr(compute, "_WORKERS", 2)


def noisy(faces, preset="noise_15"):
    return degrade.apply_preset(faces.images, faces.ids, degrade.PRESETS[preset], seed=0)


def test_chunked_work_in_two_processes_equals_one_call(sample_faces, two_workers):
    x = noisy(sample_faces)
    serial = restore._nlm(x, h_factor=0.7, patch_size=5, patch_distance=6)
    parallel = compute.map_chunks(restore._nlm, x, min_chunk=8, h_factor=0.7, patch_size=5, patch_distance=6)
    np.testing.assert_array_equal(parallel, serial)
    assert not np.array_equal(serial, x)  # it did filter
    p1, s1 = degrade._pair_metrics(sample_faces.images, x)
    p2, s2 = compute.map_chunks(degrade._pair_metrics, sample_faces.images, x, min_chunk=8)
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(compute.map_chunks(quality._noise_sigma, x, min_chunk=8), quality._noise_sigma(x))


@pytest.mark.slow
def test_landmarks_in_two_processes_equal_one_process(sample_faces, two_workers):
    task = SHARED_DIR / "models" / "face_landmarker.task"
    if not task.is_file():
        pytest.skip(f"{task} not found (the shared folder beside the checkout has it)")
    x = sample_faces.images[:24]
    serial = landmarks._extract(x, str(task))
    parallel = compute.map_chunks(landmarks._extract, x, min_chunk=8, model_path=str(task))
    np.testing.assert_array_equal(parallel, serial)
    assert (~np.isnan(serial[:, 0, 0])).mean() > 0.8


def test_small_stacks_stay_in_this_process(monkeypatch):
    monkeypatch.setattr(compute, "_WORKERS", 4)
    seen = []
    assert compute.map_chunks(lambda a: seen.append(len(a)) or a * 2, np.arange(100), min_chunk=64).tolist() == list(range(0, 200, 2))
    assert seen == [100]


@pytest.mark.slow
def test_inference_copy_folds_batchnorm_and_keeps_the_outputs(sample_faces):
    torch.manual_seed(0)
    model = cnn.CompactCNN(width=8)
    model.train()
    for _ in range(3):  # give the BatchNorm layers non-trivial running statistics
        model(cnn.to_tensor(sample_faces.images)[..., 2:46, 2:46])
    model.eval()
    fast = compute.for_inference(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    np.testing.assert_allclose(cnn.predict_proba(fast, sample_faces.images), cnn.predict_proba(model, sample_faces.images), atol=1e-5)
    u = unet.AttentionUNet().eval()
    x = noisy(sample_faces)
    diff = np.abs(unet.denoise(compute.for_inference(u), x).astype(int) - unet.denoise(u, x).astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01  # float rounding only


@pytest.mark.slow
def test_dask_backend_gives_the_numbers_of_one_process(sample_faces, monkeypatch):
    """compute.backend: dask sends the same chunks to a local dask.distributed cluster: identical results."""
    pytest.importorskip("distributed", reason="dask[distributed] is not installed (requirements.txt pins it)")
    from fer_helpers.config import parse_params

    x = degrade.apply_preset(sample_faces.images, sample_faces.ids, degrade.PRESETS["noise_25"], 0)
    compute.configure(parse_params({"compute": {"backend": "dask", "workers": 2}}))
    try:
        from distributed import get_task_stream

        assert compute.dask_client().ncores_total() == 2
        with get_task_stream(compute.dask_client().client) as tasks:
            sigma = compute.map_chunks(quality._noise_sigma, x, min_chunk=8)
        assert len(tasks.data) >= 2  # the chunks really ran on the cluster's workers
        np.testing.assert_array_equal(sigma, quality._noise_sigma(x))
        p2, s2 = compute.map_chunks(degrade._pair_metrics, sample_faces.images, x, min_chunk=8)
        p1, s1 = degrade._pair_metrics(sample_faces.images, x)
        np.testing.assert_array_equal(p2, p1)
        np.testing.assert_array_equal(s2, s1)
    finally:
        compute.configure(parse_params({}))  # back to loky; closes the cluster
    assert compute._CLIENT is None


def test_an_unreachable_dask_scheduler_is_named_with_the_fix():
    pytest.importorskip("distributed", reason="dask[distributed] is not installed (requirements.txt pins it)")
    from fer_helpers.config import parse_params

    compute.configure(parse_params({"compute": {"backend": "dask", "scheduler": "tcp://127.0.0.1:9"}}))
    try:
        with pytest.raises(RuntimeError, match=r"compute.scheduler tcp://127.0.0.1:9: no dask scheduler answered .*leave compute.scheduler null"):
            compute.dask_client()
    finally:
        compute.configure(parse_params({}))


def test_threads_join_chunks_in_order_and_may_nest(monkeypatch):
    monkeypatch.setattr(compute, "_WORKERS", 3)
    x = np.arange(900)

    def parts(a):
        inner = compute.map_threads(lambda b: b * 10, a, min_chunk=100)  # a nested call must not wait on its own pool
        return a * 2, [int(v) for v in a[:1]], pd.DataFrame({"v": inner})

    doubled, firsts, frame = compute.map_threads(parts, x, min_chunk=256)
    np.testing.assert_array_equal(doubled, x * 2)
    assert firsts == [0, 300, 600]  # three chunks, joined in order
    pd.testing.assert_frame_equal(frame, pd.DataFrame({"v": x * 10}))
    seen = []
    compute.map_threads(lambda a: seen.append(len(a)) or a, x[:300], min_chunk=256)
    assert seen == [300]  # too few rows to split: one call in this thread
