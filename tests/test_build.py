"""The build as `make archive` runs it: one process that exports every runtime of every model."""

from __future__ import annotations

import subprocess
import sys

from scripts import ROOT

# The classifier's SavedModel and the embedder's ONNX export in one build process: TensorFlow
# loaded there once made the later torch._dynamo/triton import segfault `make archive`.
BUILD_BOTH = """
import sys
from scripts.build import artifacts
from scripts import catalog
models = catalog.load()
artifacts.build([models["efficientnet_lite0"], models["minilm_embeddings"]], force=True)
assert "tensorflow" not in sys.modules, "TensorFlow was loaded into the build process"
"""


def test_a_forced_build_of_savedmodel_and_onnx_exports_in_one_process(mar_archives):
    proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", BUILD_BOTH], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "efficientnet_lite0 (tfserving): done" in proc.stdout
    assert "minilm_embeddings (torchserve): done" in proc.stdout
