"""The quick subset of the fault and abuse drills (scripts/drills/; the full set: `make drills`),
against a TorchServe of their own (the drills kill its worker) and the real SavedModel.

A drill passes when every expectation it states holds; the test shows its failures and notes.
"""

from __future__ import annotations

import pytest

from scripts.drills import payloads as drill_payloads
from scripts.drills import runner
from scripts.drills.results import Outcome, Result, table
from scripts.drills.target import MODEL, Target
from scripts.drills.tf_graph import drill_tf_graph
from scripts.serve import torchserve as launcher


@pytest.fixture(scope="module")
def target(mar_archives, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("drills")
    server = launcher.start(run_dir, launcher.Ports.free(), [MODEL])
    target = Target(server)
    yield target
    launcher.stop(target.server.run_dir)


def _check(result: Result) -> None:
    print("\n" + runner.report([result]))
    assert result.sent > 0
    assert result.passed, "\n".join(result.failures)


@pytest.mark.parametrize("name", ["worker-kill", "big-bodies", "bombs"])
def test_server_drill(target, name):
    _check(runner.SERVER_DRILLS[name](target, True))
    assert target.wait_ready(60.0) is not None


def test_tf_graph_drill(artifacts):
    _check(drill_tf_graph(None, True))


# --------------------------------------------------------------------------- the machinery

def test_result_counts_and_lost():
    result = Result("x")
    result.count([Outcome(200, "http", 0.1), Outcome(413, "http", 0.1),
                  Outcome(507, "http", 0.1), Outcome(None, "conn", 0.1),
                  Outcome(None, "lost", 9.0)])
    assert (result.sent, result.ok, result.client_errors, result.server_errors,
            result.conn_errors, result.lost) == (5, 1, 1, 1, 1, 1)
    result.expect_nothing_lost()
    assert not result.passed
    assert "FAIL" in table([result]) and "| 1    |" in table([result])


def test_payloads_are_what_they_claim(monkeypatch):
    """Bombs carry their size in the header; the scan bomb has thousands of scans."""
    import io

    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # read the headers, decode nothing
    for name, data in drill_payloads.bombs().items():
        if name.startswith(("png", "jpeg", "bmp", "tiff", "psd", "eps")):
            with Image.open(io.BytesIO(data)) as image:
                assert image.width * image.height >= 20000 ** 2, name
    scans = drill_payloads.progressive_jpeg_scans(3000)
    assert scans.count(b"\xff\xda") >= 3000
    with Image.open(io.BytesIO(drill_payloads.many_frame_gif(50, 64))) as gif:
        assert gif.n_frames == 50
