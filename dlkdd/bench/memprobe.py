"""Peak memory of one KD-step variant, measured in this fresh process (see dlkdd.bench.memory).

``python -m dlkdd.bench.memprobe '<json spec>'`` with ``variant`` (cached | online), ``config``
(a Config dict), ``num_classes``, ``batch``, ``steps``, ``store``, ``device``, ``threads``; prints one JSON
line ``{"variant", "base_rss_mb", "peak_rss_mb", "gpu_peak_mb"}``. The cached variant never
builds the teacher (that is the point of the cache); the input is random (same shape as the
real clips: memory does not depend on pixel values).
"""
from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    import numpy as np
    import torch

    from dlkdd.bench.kd_step import StudentStep
    from dlkdd.bench.memory import peak_rss_mb, rss_mb
    from dlkdd.cache.store import LogitStore
    from dlkdd.config import config_from_dict
    from dlkdd.train.engine import prepare_model

    spec = json.loads(argv[0])
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    cfg = config_from_dict(spec["config"])
    device = torch.device(spec["device"])
    B, n, steps = int(spec["batch"]), int(spec["num_classes"]), int(spec["steps"])
    base = rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step = StudentStep(cfg, n, device)
    shape = (B, 3, cfg.clip.frames, cfg.clip.size, cfg.clip.size)
    gen = torch.Generator().manual_seed(0)
    video = torch.rand(shape, generator=gen).to(device)
    label = torch.randint(0, n, (B,), generator=gen).to(device)
    if spec["variant"] == "online":
        from dlkdd.bench.models import bench_teacher

        teacher = prepare_model(bench_teacher(cfg, n)[0], device).eval()
        for _ in range(steps):
            with torch.no_grad(), step.autocast():
                tl = teacher(video).float()
            step({"video": video, "label": label, "teacher_logits": tl})
    else:
        store = LogitStore.open(spec["store"])
        rows = np.arange(B) % store.num_clips
        for _ in range(steps):
            lg, _ = store.read_many(rows)
            tl = torch.from_numpy(np.ascontiguousarray(lg[:, 0])).to(device)
            step({"video": video, "label": label, "teacher_logits": tl})
    out = {"variant": spec["variant"], "base_rss_mb": base, "peak_rss_mb": peak_rss_mb(),
           "gpu_peak_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
