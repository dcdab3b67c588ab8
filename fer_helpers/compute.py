"""Making a small CPU count: worker processes for per-face work that runs on one core, and models
prepared for fast inference.

- :func:`map_chunks` splits a stack of faces into contiguous chunks and runs a module-level function on
  them in joblib worker processes (loky, reused between calls, so a model a worker loads stays loaded).
  The result is the same as one call on the whole stack: chunks are contiguous and joined in order, and
  every function given to it treats each face on its own. Below ``min_chunk`` faces per worker it
  runs in this process (no start-up cost for small runs and the tests).
- :func:`map_threads` does the same with threads of this process, for work done in C code that
  releases the GIL (degrading and measuring faces): no start-up and no copies.
- :func:`for_inference` returns an eval-mode copy of a convolutional network with each BatchNorm folded
  into its convolution and channels-last memory (about 1.8x faster on a CPU; same outputs to float
  rounding).

``compute.workers``, ``compute.num_threads``, ``compute.backend`` and ``compute.scheduler`` (parameters)
are applied by :func:`configure`, which every notebook calls through ``report.start``. With backend
``dask`` the chunks go through joblib's dask backend to a ``dask.distributed`` cluster (docs/scaling.md):
the same chunks, joined in the same order, so the same numbers.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Callable

import numpy as np

_WORKERS: int | None = None
_BACKEND, _SCHEDULER = "loky", None
_CLIENT: Any = None  # the dask.distributed client, made on first use


def cpu_count() -> int:
    """CPUs this process may use (the affinity mask where the OS has one, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def configure(params: Any) -> None:
    """Apply the ``compute`` parameters to this process: torch threads and the worker-process count."""
    global _WORKERS, _BACKEND, _SCHEDULER
    c = params.compute
    _WORKERS = c.workers
    if (c.backend, c.scheduler) != (_BACKEND, _SCHEDULER):
        close_cluster()
    _BACKEND, _SCHEDULER = c.backend, c.scheduler
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
    w = min(dask_client().ncores_total() if _BACKEND == "dask" else workers(), n // min_chunk)
    if w <= 1:
        return fn(*arrays, **kwargs)
    from joblib import Parallel, delayed, parallel_config

    # a few chunks per worker evens out faces that take longer than others
    bounds = np.linspace(0, n, min(3 * w, max(n // min_chunk, 1)) + 1).astype(int)
    with parallel_config(backend=_BACKEND, n_jobs=w):
        parts = Parallel()(delayed(fn)(*(a[s:e] for a in arrays), **kwargs) for s, e in zip(bounds[:-1], bounds[1:]) if e > s)
    return _join(parts)


def map_threads(fn: Callable[..., Any], *arrays: Any, min_chunk: int = 256, **kwargs: Any) -> Any:
    """``fn(*arrays, **kwargs)`` computed on contiguous chunks in threads of this process, joined in order.

    For work whose time is spent in C code that releases the GIL (numpy, scipy.ndimage, Pillow's codecs):
    threads start in microseconds and share the arrays, where worker processes cost a start-up and a
    copy of the data, more than such work takes on a few thousand faces. ``fn`` must treat each row on
    its own (then the result equals one call on everything). One chunk per CPU (``compute.workers``),
    none below ``min_chunk`` rows."""
    n = len(arrays[0])
    w = min(workers(), n // min_chunk)
    if w <= 1:
        return fn(*arrays, **kwargs)
    from concurrent.futures import ThreadPoolExecutor

    bounds = np.linspace(0, n, w + 1).astype(int)
    with ThreadPoolExecutor(w) as pool:  # one pool per call: a nested call cannot wait on its own threads
        parts = list(pool.map(lambda se: fn(*(a[se[0] : se[1]] for a in arrays), **kwargs), zip(bounds[:-1], bounds[1:])))
    return _join(parts)


def _join(parts: list[Any]) -> Any:
    """Chunks' results joined along their first axis: arrays, tuples of arrays, lists or data frames."""
    first = parts[0]
    if isinstance(first, tuple):
        return tuple(_join(list(p)) for p in zip(*parts))
    if isinstance(first, list):
        return [x for p in parts for x in p]
    if isinstance(first, np.ndarray):
        return np.concatenate(parts)
    import pandas as pd

    return pd.concat(parts, ignore_index=True)


class _Client:
    """The few things map_chunks needs from a dask.distributed client."""

    def __init__(self, client: Any, cluster: Any = None):
        self.client, self.cluster = client, cluster

    def ncores_total(self) -> int:
        return max(sum(self.client.ncores().values()), 1)

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def dask_client() -> _Client:
    """The process's dask.distributed client for ``compute.backend: dask``: connected to
    ``compute.scheduler``, or to a local cluster of ``compute.workers`` single-threaded processes started
    on first use (closed by :func:`close_cluster` or at exit)."""
    global _CLIENT
    if _CLIENT is None:
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError:
            raise RuntimeError("compute.backend: dask needs dask.distributed, which is not installed here "
                               "(pip install 'dask[distributed]'), or set compute.backend: loky") from None
        if _SCHEDULER:
            try:
                _CLIENT = _Client(Client(_SCHEDULER, timeout=10))
            except OSError as e:
                raise RuntimeError(f"compute.scheduler {_SCHEDULER}: no dask scheduler answered ({e}); start one "
                                   "(dask scheduler; dask worker ADDRESS on each machine) or leave compute.scheduler null") from None
        else:
            cluster = LocalCluster(n_workers=workers(), threads_per_worker=1, processes=True, dashboard_address=None)
            _CLIENT = _Client(Client(cluster), cluster)
        import atexit

        atexit.register(close_cluster)
    return _CLIENT


def close_cluster() -> None:
    """Close the dask client (and the local cluster this process started), if any."""
    global _CLIENT
    if _CLIENT is not None:
        _CLIENT.close()
        _CLIENT = None


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
