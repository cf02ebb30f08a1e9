"""The TF graph drill: hostile images batched with good ones in the SavedModel."""

from __future__ import annotations

import threading
import time

import psutil

from scripts import catalog
from scripts.drills import payloads
from scripts.drills.results import Result
from scripts.drills.target import MAX_RSS_GROWTH_MB, MB, MODEL, Target, good_bodies


def drill_tf_graph(_target: Target | None, quick: bool) -> Result:
    """The SavedModel run by TensorFlow in this process: a 20000^2 PNG, a many-frame GIF and a
    truncated JPEG batched with good instances. The bad ones get their `error`, fast and
    without decoding the bomb; the good ones get the answer they get alone."""
    import tensorflow as tf
    import torch  # noqa: F401  (before tensorflow)

    result = Result("TF graph: bombs batched")
    model = catalog.load()[MODEL]
    loaded = tf.saved_model.load(str(model.savedmodel_dir))
    predict = loaded.signatures["serving_default"]
    good = good_bodies()
    batch = {"good-cat": good["cat"], "png-20000^2": payloads.png_bomb(),
             "gif-400-frames": payloads.many_frame_gif(400, 1000),
             "truncated-jpeg": payloads.truncated(good["cat"]), "good-coffee": good["coffee"],
             "gif-65535^2": payloads.gif_bomb(), "bmp-20000^2": payloads.bmp_bomb()}
    alone = {k: predict(images=tf.constant([batch[k]])) for k in ("good-cat", "good-coffee")}
    me = psutil.Process()
    baseline = me.memory_info().rss / MB
    peak = [baseline]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], me.memory_info().rss / MB)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    out = predict(images=tf.constant(list(batch.values())))
    elapsed = time.monotonic() - started
    stop.set()
    sampler.join()
    errors_ = [e.decode() for e in out["error"].numpy()]
    for row, (name, _) in enumerate(batch.items()):
        result.sent += 1
        if errors_[row]:
            result.client_errors += 1
        else:
            result.ok += 1
        if name.startswith("good"):
            same = (out["class_ids"].numpy()[row] == alone[name]["class_ids"].numpy()[0]).all()
            result.expect(not errors_[row] and same, f"{name}: not answered as when alone")
        elif name.startswith("gif-400"):
            result.expect(not errors_[row], f"{name}: {errors_[row]} (first frame expected)")
        else:
            result.expect(bool(errors_[row]), f"{name}: no error")
    growth = peak[0] - baseline
    result.peak_rss_mb = peak[0]
    result.note(f"batch of {len(batch)} answered in {elapsed:.2f}s, RSS growth {growth:.0f} MB; "
                + "; ".join(f"{n}: {e[:60]!r}" for n, e in zip(batch, errors_) if e))
    result.expect(growth < MAX_RSS_GROWTH_MB + 100,
                  f"RSS grew {growth:.0f} MB (the 1000x1000 GIF frame alone is ~50 MB of floats)")
    return result
