"""The device runtime: policy, model preparation, cache, out-of-memory back-off, executor."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from torch import nn

from vlm_core.runtime import (
    CacheKey,
    ImagePipeline,
    ModelCache,
    OutOfMemoryError,
    StreamingExecutor,
    map_with_oom_backoff,
    policy_for,
    prepare_model,
    run_context,
)


def test_cpu_policy_is_fp32_without_autocast():
    policy = policy_for("cpu")
    assert policy.device.type == "cpu" and policy.dtype == torch.float32
    assert not policy.autocast_enabled
    assert policy_for("cpu", "bf16").dtype == torch.bfloat16


def test_prepare_model_channels_last_only_for_convnets():
    conv = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    prepared = prepare_model(conv, policy_for("cpu"))
    weight = prepared[0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    assert not prepared.training and not weight.requires_grad
    linear = prepare_model(nn.Linear(4, 4), policy_for("cpu"))
    assert linear.weight.is_contiguous()


def test_run_context_autocasts_to_the_policy_dtype():
    layer = nn.Linear(8, 8)
    with run_context(policy_for("cpu", "bf16")):
        out = layer(torch.randn(2, 8))
    assert out.dtype == torch.bfloat16 and torch.is_inference(out)
    with run_context(policy_for("cpu")):
        assert layer(torch.randn(2, 8)).dtype == torch.float32


# --- model cache -------------------------------------------------------------------------


def key(name: str) -> CacheKey:
    return CacheKey(name, None, "cpu", "float32")


def test_three_callers_share_one_instance():
    cache = ModelCache(budget_bytes=10**9)
    built = []

    def build():
        time.sleep(0.2)  # slow enough that all three ask while it is being built
        built.append(1)
        return nn.Linear(16, 16)

    got: list[nn.Module] = []
    barrier = threading.Barrier(3)

    def caller():
        barrier.wait()
        got.append(cache.acquire(key("shared"), build))

    threads = [threading.Thread(target=caller) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1 and len({id(m) for m in got}) == 1
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.leased) == (2, 1, 1)
    for _ in range(3):
        cache.release(key("shared"))
    with pytest.raises(RuntimeError, match="without a lease"):
        cache.release(key("shared"))


def test_cycling_models_stays_within_the_budget():
    size = 64 * 64 * 4 + 64 * 4  # bytes of one nn.Linear(64, 64)
    cache = ModelCache(budget_bytes=2 * size)
    peak = 0
    for _ in range(10):
        for i in range(5):
            with cache.lease(key(f"m{i}"), lambda: nn.Linear(64, 64)) as model:
                assert isinstance(model, nn.Linear)
            peak = max(peak, cache.stats().bytes)
    stats = cache.stats()
    assert peak <= 2 * size and stats.entries == 2
    assert stats.misses == 50 and stats.evictions == 48


def test_leased_models_are_never_evicted():
    cache = ModelCache(budget_bytes=1)
    held = cache.acquire(key("held"), lambda: nn.Linear(8, 8))
    with cache.lease(key("other"), lambda: nn.Linear(8, 8)):
        pass
    assert key("held") in cache and key("other") not in cache
    assert cache.acquire(key("held"), lambda: None) is held


def test_a_failing_factory_does_not_poison_the_key():
    cache = ModelCache(budget_bytes=10**6)
    with pytest.raises(ValueError):
        cache.acquire(key("x"), lambda: (_ for _ in ()).throw(ValueError("boom")))
    assert cache.acquire(key("x"), lambda: nn.Linear(2, 2)) is not None


# --- out-of-memory back-off ----------------------------------------------------------------


def oom_above(limit: int):
    def fn(chunk):
        if len(chunk) > limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {len(chunk)} GiB")
        return [x * 10 for x in chunk]

    return fn


def test_oom_backs_off_and_completes_in_order():
    seen = []
    out = list(map_with_oom_backoff(oom_above(5), list(range(23)), 16,
                                    on_backoff=lambda a, b: seen.append((a, b))))  # fmt: skip
    assert out == [x * 10 for x in range(23)]
    assert seen == [(16, 8), (8, 4)]


def test_non_oom_errors_are_not_swallowed():
    error = KeyError("not memory")

    def fn(chunk):
        raise error

    with pytest.raises(KeyError) as caught:
        list(map_with_oom_backoff(fn, [1, 2], 2))
    assert caught.value is error


def test_oom_at_batch_size_one_is_a_clear_error():
    with pytest.raises(OutOfMemoryError, match="even at batch size 1 \\(started at 4\\)"):
        list(map_with_oom_backoff(oom_above(0), [1, 2, 3], 4))


# --- streaming executor ---------------------------------------------------------------------


@pytest.fixture
def jpeg_folder(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(13):
        pixels = rng.integers(0, 255, (40 + i, 50, 3), dtype=np.uint8)
        path = tmp_path / f"img{i:02d}.jpg"
        PILImage.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


class MeanModel(nn.Module):
    """Output per image: its per-channel means (easy to check), and it records batch sizes."""

    def __init__(self, fail_above: int | None = None):
        super().__init__()
        self.sizes: list[int] = []
        self.fail_above = fail_above

    def forward(self, x):
        self.sizes.append(x.shape[0])
        if self.fail_above is not None and x.shape[0] > self.fail_above:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return x.mean(dim=(2, 3))


PIPE = ImagePipeline(size=(32, 32), resize=36, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


@pytest.mark.parametrize("workers", [0, 2])
def test_executor_returns_every_item_in_order(jpeg_folder, workers):
    executor = StreamingExecutor(MeanModel(), PIPE, policy_for("cpu"), batch_size=4,
                                 num_workers=workers)  # fmt: skip
    results = list(executor.map(jpeg_folder))
    assert [r.item for r in results] == jpeg_folder
    expected = PIPE.to_device([PIPE.read(jpeg_folder[5])], torch.device("cpu")).mean(dim=(2, 3))[0]
    torch.testing.assert_close(results[5].output, expected)


def test_executor_reports_bad_files_and_carries_on(jpeg_folder, tmp_path):
    bad = tmp_path / "zip.jpg"
    bad.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    items = [*jpeg_folder[:3], bad, *jpeg_folder[3:6]]
    results = list(StreamingExecutor(MeanModel(), PIPE, policy_for("cpu"), batch_size=3,
                                     num_workers=0).map(items))  # fmt: skip
    assert [r.item for r in results if r.error is None] == [*jpeg_folder[:3], *jpeg_folder[3:6]]
    (failed,) = [r for r in results if r.error]
    assert failed.item == bad and "content is a ZIP" in failed.error


def test_executor_backs_off_on_injected_oom(jpeg_folder):
    model = MeanModel(fail_above=3)
    executor = StreamingExecutor(model, PIPE, policy_for("cpu"), batch_size=8, num_workers=0)
    results = list(executor.map(jpeg_folder))
    assert len(results) == 13 and all(r.error is None for r in results)
    assert executor.backoffs[0] == (8, 4) and (4, 2) in executor.backoffs
    assert max(s for s in model.sizes if s <= 3) == 2


def test_executor_does_not_swallow_model_bugs(jpeg_folder):
    def broken(x):
        raise ValueError("shape mismatch in head")

    executor = StreamingExecutor(broken, PIPE, policy_for("cpu"), batch_size=4, num_workers=0)
    with pytest.raises(ValueError, match="shape mismatch"):
        list(executor.map(jpeg_folder))


@pytest.mark.gpu
def test_real_cuda_out_of_memory_backs_off():
    """A batch function whose memory grows with the batch: above 5 items it cannot fit."""
    free, _ = torch.cuda.mem_get_info()
    per_item = free // 6
    seen = []

    def fn(chunk):
        buffer = torch.empty(len(chunk) * per_item, dtype=torch.uint8, device="cuda")
        del buffer
        return [x + 1 for x in chunk]

    out = list(map_with_oom_backoff(fn, list(range(20)), 16,
                                    on_backoff=lambda a, b: seen.append((a, b))))  # fmt: skip
    assert out == [x + 1 for x in range(20)]
    assert seen == [(16, 8), (8, 4)]


def test_device_decoding_matches_worker_decoding(jpeg_folder):
    """JPEG bytes decoded in to_device give exactly the worker-decoded tensors (same ops)."""
    on_device = ImagePipeline(size=(32, 32), resize=36, gpu_decode=True)
    in_worker = ImagePipeline(size=(32, 32), resize=36, gpu_decode=False)
    cpu = torch.device("cpu")
    packed = on_device.pack([on_device.read(p) for p in jpeg_folder[:5]])
    assert packed["kinds"] == ["jpeg"] * 5
    a = on_device.to_device(ImagePipeline.unpack(packed), cpu)
    b = in_worker.to_device(
        ImagePipeline.unpack(in_worker.pack([in_worker.read(p) for p in jpeg_folder[:5]])), cpu
    )
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_workers_persist_across_calls_and_accept_generators(jpeg_folder):
    with StreamingExecutor(MeanModel(), PIPE, policy_for("cpu"), batch_size=3,
                           num_workers=2) as executor:  # fmt: skip
        first = [r.item for r in executor.map(jpeg_folder)]
        pool = executor._pool
        second = [r.item for r in executor.map(p for p in reversed(jpeg_folder))]
        assert executor._pool is pool  # the same worker processes served both calls
    assert first == jpeg_folder and second == list(reversed(jpeg_folder))


def test_stopping_early_leaves_the_executor_usable(jpeg_folder):
    executor = StreamingExecutor(MeanModel(), PIPE, policy_for("cpu"), batch_size=2, num_workers=2)
    for i, _ in enumerate(executor.map(jpeg_folder)):
        if i == 2:
            break
    assert [r.item for r in executor.map(jpeg_folder[:5])] == jpeg_folder[:5]
    executor.close()


def test_seeding_and_deterministic_mode():
    from vlm_core.runtime import seed_everything, set_deterministic

    seed_everything(3)
    a = torch.randn(4)
    seed_everything(3)
    torch.testing.assert_close(a, torch.randn(4), rtol=0, atol=0)
    try:
        set_deterministic(True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    finally:
        set_deterministic(False)
    assert not torch.are_deterministic_algorithms_enabled()
