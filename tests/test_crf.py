"""Dense CRF through the real pydensecrf: it snaps masks to image edges, the pool equals the serial path, failures stay local."""

import os

import numpy as np
import pytest

from cpfcte_hf.models.cpfcte.crf import CRFPool, DenseCRFConfig, crf_mask, default_num_workers, dense_crf, refine_masks


def two_region_example(seed: int, height: int = 48, width: int = 64, boundary: int = 40, shift: int = 8):
    """An image with a vertical colour edge at `boundary`, and noisy probabilities whose edge is `shift` px off."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((height, width), np.uint8)
    truth[:, boundary:] = 1
    colours = np.where(truth[..., None] == 1, [200, 60, 40], [40, 60, 200])
    image = np.clip(colours + rng.normal(0, 4, (height, width, 3)), 0, 255).astype(np.uint8)
    columns = np.arange(width)[None, :].repeat(height, 0)
    foreground = 1 / (1 + np.exp(-(columns - (boundary - shift)) / 5.0)) + rng.normal(0, 0.2, (height, width))
    foreground = np.clip(foreground, 0.02, 0.98)
    probabilities = np.stack([1 - foreground, foreground]).astype(np.float32)
    return image, probabilities, truth


def mean_iou(prediction, truth):
    return np.mean(
        [((prediction == c) & (truth == c)).sum() / ((prediction == c) | (truth == c)).sum() for c in (0, 1)]
    )


def test_spec_defaults():
    config = DenseCRFConfig()
    assert (config.iterations, config.gaussian_sxy, config.gaussian_compat) == (10, 1.0, 3.0)
    assert (config.bilateral_sxy, config.bilateral_srgb, config.bilateral_compat) == (67.0, 3.0, 4.0)
    with pytest.raises(ValueError, match="bilateral_srgb"):
        DenseCRFConfig(bilateral_srgb=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_crf_moves_noisy_mask_to_the_image_edge(seed):
    image, probabilities, truth = two_region_example(seed)
    before = probabilities.argmax(0)
    after = crf_mask(image, probabilities)
    assert after.shape == truth.shape and after.dtype == np.uint8
    assert mean_iou(before, truth) < 0.85
    assert mean_iou(after, truth) > mean_iou(before, truth) + 0.1
    assert mean_iou(after, truth) > 0.95


def test_without_the_bilateral_term_the_edge_is_not_found():
    # The edge comes from the image colours: switch the appearance kernel off and the gain disappears.
    image, probabilities, truth = two_region_example(0)
    no_appearance = crf_mask(image, probabilities, DenseCRFConfig(bilateral_compat=0.0))
    assert mean_iou(no_appearance, truth) < mean_iou(crf_mask(image, probabilities), truth) - 0.1


def test_dropping_empty_classes_gives_the_same_mask():
    image, probabilities, _ = two_region_example(2)
    padded = np.zeros((5,) + probabilities.shape[1:], np.float32)
    padded[[0, 3]] = probabilities  # three classes the image does not have, exactly zero (class masking)
    fast = dense_crf(image, padded, DenseCRFConfig(drop_empty_classes=True))
    full = dense_crf(image, padded, DenseCRFConfig(drop_empty_classes=False))
    np.testing.assert_array_equal(fast.argmax(0), full.argmax(0))
    assert set(np.unique(fast.argmax(0))) <= {0, 3}
    np.testing.assert_allclose(fast.sum(0), 1.0, atol=1e-4)


def test_read_only_inputs_are_accepted():
    image, probabilities, _ = two_region_example(0)
    expected = crf_mask(image, probabilities)
    image.setflags(write=False)
    probabilities.setflags(write=False)
    np.testing.assert_array_equal(crf_mask(image, probabilities), expected)


def test_single_class_and_zero_iterations():
    image, probabilities, _ = two_region_example(0)
    only_background = np.zeros_like(probabilities)
    only_background[0] = 1.0
    assert (crf_mask(image, only_background) == 0).all()
    # No iterations: the argmax of the unary, i.e. of the input.
    np.testing.assert_array_equal(
        crf_mask(image, probabilities, DenseCRFConfig(iterations=0)), probabilities.argmax(0)
    )


def test_bad_inputs_raise():
    image, probabilities, _ = two_region_example(0)
    with pytest.raises(ValueError, match="do not match the image"):
        dense_crf(image[:10], probabilities)
    with pytest.raises(ValueError, match="RGB"):
        dense_crf(image[..., 0], probabilities)
    bad = probabilities.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        dense_crf(image, bad)


def test_pool_equals_serial_and_reports_a_failure_without_stopping():
    items = []
    for seed in range(4):
        image, probabilities, _ = two_region_example(seed, height=30 + seed, width=40)
        padded = np.zeros((4,) + probabilities.shape[1:], np.float32)
        padded[[0, 2]] = probabilities
        items.append((f"img{seed}", image, padded))
    # One image whose probabilities do not match it: a real CRF failure.
    items.insert(2, ("broken", items[0][1][:5], items[0][2]))

    serial = refine_masks(items, num_workers=0)
    pooled = refine_masks(items, num_workers=2)
    assert set(pooled) == {key for key, _, _ in items}
    assert not pooled["broken"].ok and "do not match" in pooled["broken"].error
    assert not serial["broken"].ok
    for key, image, probabilities in items:
        if key == "broken":
            continue
        assert pooled[key].ok, pooled[key].error
        np.testing.assert_array_equal(pooled[key].mask, serial[key].mask)
        np.testing.assert_array_equal(pooled[key].mask, crf_mask(image, probabilities))


def test_pool_streams_with_bounded_pending_and_is_reusable():
    image, probabilities, _ = two_region_example(0, height=20, width=24)
    with CRFPool(num_workers=1, max_pending=2) as pool:
        keys = [r.key for r in pool.map((i, image, probabilities) for i in range(5))]
        assert sorted(keys) == list(range(5))
        pool.submit("again", image, probabilities)
        (result,) = pool.drain()
        assert result.key == "again" and result.ok
    assert default_num_workers() >= 1


class _KillsTheWorker:
    """A key whose unpickling ends the worker process, as a crash inside the C++ CRF would."""

    def __reduce__(self):
        return (os._exit, (3,))


def test_a_dying_worker_is_reported_and_a_fresh_pool_takes_the_rest():
    image, probabilities, _ = two_region_example(0, height=20, width=24)
    killer = _KillsTheWorker()
    with CRFPool(num_workers=1) as pool:
        pool.submit(killer, image, probabilities)
        (result,) = pool.drain()
        assert result.key is killer and not result.ok and "worker process died" in result.error
        results = list(pool.map([("a", image, probabilities), ("b", image, probabilities)]))
    assert sorted(r.key for r in results) == ["a", "b"] and all(r.ok for r in results)
    np.testing.assert_array_equal(results[0].mask, crf_mask(image, probabilities))


def _process_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stream:
            return stream.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _ignores_sigint(pid: int) -> bool:
    import signal

    with open(f"/proc/{pid}/status") as stream:
        ignored = next(int(line.split()[1], 16) for line in stream if line.startswith("SigIgn:"))
    return bool(ignored & (1 << (signal.SIGINT - 1)))


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads processes from /proc")
def test_workers_ignore_ctrl_c_and_an_interrupt_stops_them_without_waiting():
    import signal
    import time

    image, probabilities, _ = two_region_example(0, height=30, width=40)
    slow = DenseCRFConfig(iterations=200_000)  # minutes: only an interrupt can end it early
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with CRFPool(slow, num_workers=2) as pool:
            pool.submit("slow", image, probabilities)
            pool.submit("slow too", image, probabilities)
            workers = pool.worker_pids
            assert len(workers) == 2
            deadline = time.monotonic() + 30
            while not all(_ignores_sigint(pid) for pid in workers):  # their initializer has run
                assert time.monotonic() < deadline, "the workers never set SIGINT to ignored"
                time.sleep(0.01)
            for pid in workers:  # a Ctrl-C reaches the whole process group: the workers leave it to the parent
                os.kill(pid, signal.SIGINT)
            time.sleep(0.5)
            assert all(_process_alive(pid) for pid in workers)
            assert pool.poll() == []
            raise KeyboardInterrupt
    assert time.monotonic() - started < 30
    assert not any(_process_alive(pid) for pid in workers)
