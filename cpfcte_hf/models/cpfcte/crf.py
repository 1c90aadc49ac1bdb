# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Dense CRF refinement of class probability maps (docs/method.md section 3, step 4), serially or over a process pool.

`dense_crf(image, probabilities)` refines one image: unary = -log(softmax probabilities), a Gaussian (smoothness)
and a bilateral (appearance) pairwise term, mean-field inference at the image's original resolution
(Krähenbühl and Koltun 2011, through pydensecrf). Every value is a field of `DenseCRFConfig`; the defaults are
those of docs/method.md section 3 (10 iterations; Gaussian sxy=1 compat=3; bilateral sxy=67 srgb=3 compat=4).

`CRFPool` runs many images over worker processes sized to the machine and reports a failure on one image
without stopping the others. Its workers never outlive the process that started them: on Linux the kernel kills
them when it dies (`PR_SET_PDEATHSIG`), elsewhere a watch thread in each worker exits when it is orphaned; they
ignore SIGINT and SIGTERM (stopping is the parent's to handle: a Ctrl-C or a `kill` of the whole process group
reaches the workers too, and they must neither die first nor print anything), and leaving the pool on an
exception such as `KeyboardInterrupt` kills them at once instead of waiting for the images in flight:

```python
>>> from cpfcte_hf.models.cpfcte.crf import CRFPool, DenseCRFConfig, crf_mask
>>> mask = crf_mask(rgb, probabilities)                       # (H, W) uint8, one image
>>> with CRFPool(DenseCRFConfig(), num_workers=4) as pool:
...     for result in pool.map((key, rgb, probabilities) for ...):   # results in completion order
...         result.key, result.mask, result.error
```

This file imports only the standard library, numpy and pydensecrf, so that the pipeline that uses it can be
saved as remote code and so that pool workers start fast.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


# 2048 px: masks stay within 2x of a 12 MP photo's resolution, and a CRF worker peaks well under the 2 GB goal at
# 24 MP (README, Performance: CRF memory). VOC (500 px) and COCO (640 px) images are far below it: unchanged. Larger
# images are downscaled to it for the probability maps and the CRF, and their masks upsampled back.
DEFAULT_CRF_MAX_SIDE = 2048


@dataclass
class DenseCRFConfig:
    """
    Parameters of the dense CRF (docs/method.md section 3; the pydensecrf argument names).

    Attributes:
        iterations: mean-field iterations (10).
        gaussian_sxy: spatial standard deviation, in pixels, of the smoothness kernel (1).
        gaussian_compat: weight of the smoothness kernel (Potts compatibility) (3).
        bilateral_sxy: spatial standard deviation, in pixels, of the appearance kernel (67).
        bilateral_srgb: colour standard deviation, in 0..255 units, of the appearance kernel (3).
        bilateral_compat: weight of the appearance kernel (4).
        unary_clip: probabilities are clipped to at least this before `-log` (pydensecrf's `unary_from_softmax`
            default, 1e-5).
        drop_empty_classes: run the CRF only over the classes whose probability is non-zero somewhere. With
            image-level class masking, absent classes are exactly zero and could only ever get a tiny share of
            the mass; dropping them gives the same masks several times faster (3 classes instead of 21 on VOC).
    """

    iterations: int = 10
    gaussian_sxy: float = 1.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 67.0
    bilateral_srgb: float = 3.0
    bilateral_compat: float = 4.0
    unary_clip: float = 1e-5
    drop_empty_classes: bool = True

    def __post_init__(self):
        if int(self.iterations) < 0:
            raise ValueError(f"`iterations` must be >= 0, got {self.iterations}.")
        for name in ("gaussian_sxy", "bilateral_sxy", "bilateral_srgb"):
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be > 0, got {getattr(self, name)}.")
        if not 0.0 < self.unary_clip < 1.0:
            raise ValueError(f"`unary_clip` must be in (0, 1), got {self.unary_clip}.")

    def to_dict(self) -> dict:
        return asdict(self)


def _check_crf_inputs(image: np.ndarray, probabilities: np.ndarray) -> None:
    """`dense_crf`'s checks: an `(H, W, 3)` image, finite `(C, H, W)` probabilities at the image's resolution."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"The CRF needs an (H, W, 3) RGB image, got shape {image.shape}.")
    if probabilities.ndim != 3 or probabilities.shape[1:] != image.shape[:2]:
        raise ValueError(
            f"Probabilities {probabilities.shape} do not match the image {image.shape[:2]}: the CRF runs at the "
            "original resolution, so upsample the maps to (C, H, W) first."
        )
    if not np.isfinite(probabilities).all():
        raise ValueError("The probabilities contain NaN or infinite values.")


def _present_classes(probabilities: np.ndarray) -> np.ndarray:
    """Ids of the classes of `(C, H, W)` probabilities that are non-zero somewhere (`drop_empty_classes`)."""
    return np.flatnonzero(probabilities.reshape(len(probabilities), -1).max(axis=1) > 0)


def dense_crf(
    image: np.ndarray,
    probabilities: np.ndarray,
    config: DenseCRFConfig | None = None,
) -> np.ndarray:
    """
    Refines class probabilities with a dense CRF.

    Args:
        image: `(H, W, 3)` uint8 RGB image at its original resolution (the bilateral kernel reads its colours).
        probabilities: `(C, H, W)` class probabilities for that image (they need not sum exactly to 1).
        config: CRF parameters; the defaults of docs/method.md section 3 when `None`.

    Returns:
        `(C, H, W)` float32 marginals after mean-field inference (classes dropped by `drop_empty_classes` get 0).

    Raises:
        ValueError: the image is not `(H, W, 3)`, the shapes disagree, or the probabilities are not finite.
    """
    config = config or DenseCRFConfig()
    image = np.asarray(image)
    probabilities = np.asarray(probabilities, dtype=np.float32)
    _check_crf_inputs(image, probabilities)
    num_classes, height, width = probabilities.shape
    classes = np.arange(num_classes)
    if config.drop_empty_classes:
        classes = _present_classes(probabilities)
        if classes.size == 0:
            classes = np.arange(num_classes)
    if classes.size == 1:  # nothing to choose between
        refined = np.zeros_like(probabilities)
        refined[classes[0]] = 1.0
        return refined

    import pydensecrf.densecrf as dcrf

    subset = probabilities[classes]
    unary = -np.log(np.clip(subset, config.unary_clip, 1.0)).reshape(len(classes), -1)
    crf = dcrf.DenseCRF2D(width, height, len(classes))
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=config.gaussian_sxy, compat=config.gaussian_compat)
    crf.addPairwiseBilateral(
        sxy=config.bilateral_sxy,
        srgb=config.bilateral_srgb,
        # pydensecrf's memoryview refuses read-only buffers (e.g. `np.asarray(pil_image)`): "W" copies those.
        rgbim=np.require(image, dtype=np.uint8, requirements=["C", "W"]),
        compat=config.bilateral_compat,
    )
    marginals = np.asarray(crf.inference(int(config.iterations)), dtype=np.float32).reshape(
        len(classes), height, width
    )
    refined = np.zeros_like(probabilities)
    refined[classes] = marginals
    return refined


def crf_mask(image: np.ndarray, probabilities: np.ndarray, config: DenseCRFConfig | None = None) -> np.ndarray:
    """`dense_crf` followed by the argmax: an `(H, W)` uint8 mask of class ids."""
    return dense_crf(image, probabilities, config).argmax(axis=0).astype(np.uint8)


@dataclass
class CRFResult:
    """Outcome of one image: `mask` `(H, W)` uint8 on success, else `None` and `error` says why."""

    key: Any
    mask: np.ndarray | None = None
    error: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process so far, in MiB (`None` where `resource` is missing, e.g. Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def _crf_task(key, image, probabilities, classes, config: DenseCRFConfig) -> CRFResult:
    """Runs in a worker: never raises, so one bad image cannot take the pool down with a Python exception."""
    try:
        mask = crf_mask(image, probabilities, config)
        if classes is not None:
            # Only the non-empty classes travel to the worker (less pickling and memory: the CRF never needs the
            # empty ones, whose marginals would be 0); map the subset's ids back to the model's class ids.
            mask = classes[0].astype(np.uint8)[mask]
        return CRFResult(key, mask=mask, extra={"worker_peak_rss_mb": peak_rss_mb()})
    except Exception as error:  # noqa: BLE001 - reported per image, the run goes on
        detail = traceback.format_exception_only(type(error), error)[-1].strip()
        return CRFResult(key, error=detail)


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _worker_initializer(parent_pid: int | None, watch_interval: float) -> None:
    """
    First thing in every CRF worker: tie its life to the parent's, and leave SIGINT and SIGTERM to the parent.

    On Linux the kernel sends SIGKILL to the worker when the parent dies (`prctl(PR_SET_PDEATHSIG)`), whatever
    killed it (SIGKILL, the OOM killer, a crash). Everywhere, a daemon thread checks every `watch_interval`
    seconds whether the worker has been orphaned (its parent pid changed) and exits then. `parent_pid` is the pid
    the worker's parent must have (the pool's process with "fork" / "spawn"; `None` where another process starts
    workers, e.g. a forkserver): a parent that died before `prctl` ran is caught by that comparison. (Linux sends
    the parent-death signal when the *thread* that started the worker ends: use a pool from a thread that lives
    as long as the pool, e.g. the main thread, as the pseudo-labelling does.)

    A forked worker inherits the parent's Python signal handlers (`cpfcte_hf.utils.interrupts.stop_on_signals` raises in
    them): both signals are ignored here, so that a signal sent to the process group, or the parent's own stop,
    never prints a worker's traceback; `CRFPool.terminate` ends workers with SIGKILL.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no usable libc: the watch thread below still works
            pass
    expected = parent_pid if parent_pid is not None else os.getppid()
    if os.getppid() != expected:
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(watch_interval)
            if os.getppid() != expected:
                os._exit(1)

    threading.Thread(target=watch, name="crf-parent-watch", daemon=True).start()


def default_num_workers() -> int:
    """CPUs this process may run on (`os.sched_getaffinity`, which respects container limits), else `os.cpu_count()`."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _default_context() -> str:
    # Workers only run numpy and pydensecrf: forking is safe and skips re-importing torch/transformers in every
    # worker, which "spawn" would do through this package's __init__.
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


class CRFPool:
    """
    Dense CRF over many images in worker processes.

    Args:
        config: CRF parameters (the defaults of docs/method.md section 3 when `None`).
        num_workers: worker processes; `None` = `default_num_workers()`; 0 runs serially in this process (same
            results, no pool; useful for debugging and for machines with one core).
        max_pending: images in flight at once (bounds memory); defaults to `2 * num_workers`.
        mp_context: multiprocessing start method; defaults to "fork" where available, else "spawn".

    `map(items)` takes `(key, image, probabilities)` triples and yields one `CRFResult` per item in completion
    order. A failing image gives a result with `error` set; if a worker process dies (e.g. a crash inside
    pydensecrf), the images queued at that moment are reported failed (a rerun of a pseudo-labelling job retries
    them) and a fresh pool takes the rest.
    """

    def __init__(
        self,
        config: DenseCRFConfig | None = None,
        num_workers: int | None = None,
        max_pending: int | None = None,
        mp_context: str | None = None,
    ):
        self.config = config or DenseCRFConfig()
        self.num_workers = default_num_workers() if num_workers is None else int(num_workers)
        if self.num_workers < 0:
            raise ValueError(f"`num_workers` must be >= 0, got {num_workers}.")
        self.max_pending = max_pending or max(2, 2 * self.num_workers)
        self.mp_context = mp_context or _default_context()
        self._executor: ProcessPoolExecutor | None = None
        self._pending: dict[Future, Any] = {}
        self._ready: list[CRFResult] = []  # serial mode: computed at submit, handed out by poll

    def __enter__(self) -> CRFPool:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is not None and not issubclass(exc_type, Exception):
            self.terminate()  # KeyboardInterrupt, SystemExit: do not wait for the images in flight
        else:
            self.close()

    def close(self) -> None:
        """Waits for the running images, then stops the workers."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._pending.clear()
        self._ready.clear()

    def terminate(self) -> None:
        """Stops the workers now (SIGKILL: they ignore SIGTERM, and hold nothing to clean up); queued and running
        images are dropped."""
        executor, self._executor = self._executor, None
        if executor is not None:
            # ProcessPoolExecutor has no public way to stop running work; its `_processes` are the workers.
            processes = list((getattr(executor, "_processes", None) or {}).values())
            for process in processes:
                if process.is_alive():
                    process.kill()
            for process in processes:
                process.join(timeout=5)
            executor.shutdown(wait=False, cancel_futures=True)
        self._pending.clear()
        self._ready.clear()

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (empty before the first image and in serial mode)."""
        processes = (getattr(self._executor, "_processes", None) or {}) if self._executor is not None else {}
        return sorted(pid for pid, process in processes.items() if process.is_alive())

    def _ensure_executor(self) -> ProcessPoolExecutor:
        if self._executor is None:
            parent_pid = os.getpid() if self.mp_context in ("fork", "spawn") else None
            self._executor = ProcessPoolExecutor(
                max_workers=self.num_workers,
                mp_context=multiprocessing.get_context(self.mp_context),
                initializer=_worker_initializer,
                initargs=(parent_pid, 1.0),
            )
        return self._executor

    def _prepare(self, probabilities: np.ndarray):
        probabilities = np.asarray(probabilities, dtype=np.float32)
        if self.config.drop_empty_classes and probabilities.ndim == 3:
            present = _present_classes(probabilities)
            if 0 < present.size < len(probabilities):
                return np.ascontiguousarray(probabilities[present]), (present, len(probabilities))
        return probabilities, None

    def submit(self, key, image: np.ndarray, probabilities: np.ndarray) -> None:
        """Queues one image; collect results with `poll` / `drain` (or use `map`)."""
        if self.num_workers == 0:
            self._ready.append(_crf_task(key, image, probabilities, None, self.config))
            return
        subset, classes = self._prepare(probabilities)
        try:
            future = self._ensure_executor().submit(_crf_task, key, image, subset, classes, self.config)
        except BrokenProcessPool:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
            future = self._ensure_executor().submit(_crf_task, key, image, subset, classes, self.config)
        self._pending[future] = key

    @property
    def num_pending(self) -> int:
        return len(self._pending) + len(self._ready)

    def poll(self, block: bool = False) -> list[CRFResult]:
        """Results finished so far (with `block=True`, waits for at least one if any is pending)."""
        if self._ready:
            results, self._ready = self._ready, []
            return results
        if not self._pending:
            return []
        done, _ = wait(list(self._pending), timeout=None if block else 0, return_when=FIRST_COMPLETED)
        results = []
        broken = False
        for future in done:
            key = self._pending.pop(future)
            try:
                results.append(future.result())
            except BrokenProcessPool as error:
                broken = True
                results.append(
                    CRFResult(key, error=f"a CRF worker process died while this image was queued ({error})")
                )
            except Exception as error:  # noqa: BLE001 - e.g. an unpicklable input
                results.append(CRFResult(key, error=f"{type(error).__name__}: {error}"))
        if broken and self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None  # the next submit starts a fresh pool
        return results

    def drain(self) -> list[CRFResult]:
        """Waits for everything queued."""
        results = []
        while self.num_pending:
            results.extend(self.poll(block=True))
        return results

    def map(self, items: Iterable[tuple[Any, np.ndarray, np.ndarray]]) -> Iterator[CRFResult]:
        """Refines `(key, image, probabilities)` items; yields `CRFResult`s in completion order."""
        for key, image, probabilities in items:
            self.submit(key, image, probabilities)
            while self.num_pending >= self.max_pending:
                yield from self.poll(block=True)
            yield from self.poll(block=False)
        yield from self.drain()


def refine_masks(
    items: Iterable[tuple[Any, np.ndarray, np.ndarray]],
    config: DenseCRFConfig | None = None,
    num_workers: int | None = None,
) -> dict[Any, CRFResult]:
    """Convenience: runs `CRFPool.map` to the end and returns `{key: CRFResult}`."""
    with CRFPool(config, num_workers=num_workers) as pool:
        return {result.key: result for result in pool.map(items)}


__all__ = [
    "CRFPool",
    "CRFResult",
    "DenseCRFConfig",
    "crf_mask",
    "default_num_workers",
    "dense_crf",
    "peak_rss_mb",
    "refine_masks",
]
