"""Making a small CPU count: worker processes for per-face work that runs on one core, and models
prepared for fast inference.

- :func:`map_chunks` splits a stack of faces into contiguous chunks and runs a module-level function on
  them in joblib worker processes (loky, reused between calls, so a model a worker loads stays loaded).
  The result is the same as one call on the whole stack: chunks are contiguous and joined in order, and
  every function given to it treats each face on its own. Below ``min_chunk`` faces per worker it
  runs in this process (no start-up cost for small runs and the tests).
- :func:`for_inference` returns an eval-mode copy of a convolutional network with each BatchNorm folded
  into its convolution and channels-last memory (about 1.8x faster on a CPU; same outputs to float
  rounding).

``compute.workers`` and ``compute.num_threads`` (parameters) are applied by :func:`configure`, which
every notebook calls through ``report.start``.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Callable

import numpy as np

_WORKERS: int | None = None


def cpu_count() -> int:
    """CPUs this process may use (the affinity mask where the OS has one, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def configure(params: Any) -> None:
    """Apply the ``compute`` parameters to this process: torch threads and the worker-process count."""
    global _WORKERS
    c = params.compute
    _WORKERS = c.workers
    if c.num_threads:
        import torch

        torch.set_num_threads(c.num_threads)


def workers() -> int:
    """Worker processes :func:`map_chunks` may use (``compute.workers``, default one per CPU)."""
    return _WORKERS or cpu_count()


def map_chunks(fn: Callable[..., Any], *arrays: np.ndarray, min_chunk: int = 256, **kwargs: Any) -> Any:
    """``fn(*arrays, **kwargs)`` computed chunk-wise in worker processes and joined along axis 0.

    ``fn`` must be importable (a module-level function) and treat each row on its own. It returns an
    array or a tuple of arrays; the chunks' results are concatenated in order.
    """
    n = len(arrays[0])
    w = min(workers(), n // min_chunk)
    if w <= 1:
        return fn(*arrays, **kwargs)
    from joblib import Parallel, delayed

    # a few chunks per worker evens out faces that take longer than others
    bounds = np.linspace(0, n, min(3 * w, max(n // min_chunk, 1)) + 1).astype(int)
    parts = Parallel(n_jobs=w, backend="loky")(
        delayed(fn)(*(a[s:e] for a in arrays), **kwargs) for s, e in zip(bounds[:-1], bounds[1:]) if e > s
    )
    if isinstance(parts[0], tuple):
        return tuple(np.concatenate(p) for p in zip(*parts))
    return np.concatenate(parts)


def for_inference(model: "torch.nn.Module", device: str = "cpu") -> "torch.nn.Module":  # noqa: F821
    """An eval-mode copy for prediction: on a CPU, BatchNorm folded into the convolutions and channels-last.

    The original ``model`` is left as it is (Grad-CAM and training need the unfused layers). Where the
    network cannot be traced (data-dependent control flow), the eval copy is returned unfused.
    """
    import torch

    m = copy.deepcopy(model).eval()
    if str(device) != "cpu":
        return m
    try:
        from torch.fx.experimental.optimization import fuse

        m = fuse(m)
    except Exception:  # torch.fx cannot trace every module; the unfused copy is correct, only slower
        pass
    return m.to(memory_format=torch.channels_last)


def channels_last(x: "torch.Tensor") -> "torch.Tensor":  # noqa: F821
    """A 4-D input in the memory layout :func:`for_inference` models run fastest on."""
    import torch

    return x.contiguous(memory_format=torch.channels_last)
