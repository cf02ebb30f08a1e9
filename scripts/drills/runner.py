"""The drills' driver: which drills there are, one shared server for them, the report."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from scripts.drills import __doc__ as drills_doc
from scripts.drills.abuse import (
    drill_big_bodies,
    drill_bombs,
    drill_progressive,
    drill_slowloris,
    drill_soak,
)
from scripts.drills.faults import (
    drill_flood,
    drill_frontend_kill,
    drill_worker_kill,
    drill_worker_stop,
)
from scripts.drills.keys import drill_tokens
from scripts.drills.results import Result, table
from scripts.drills.target import MODEL, Target
from scripts.drills.tf_graph import drill_tf_graph
from scripts.serve import torchserve as launcher

# ---------------------------------------------------------------------------------- driver

SERVER_DRILLS: dict[str, Callable[[Target, bool], Result]] = {
    "worker-kill": drill_worker_kill,
    "worker-stop": drill_worker_stop,
    "flood": drill_flood,
    "big-bodies": drill_big_bodies,
    "slowloris": drill_slowloris,
    "bombs": drill_bombs,
    "progressive": drill_progressive,
    "soak": drill_soak,
    "tokens": drill_tokens,
    # Last: it kills and restarts the shared server.
    "frontend-kill": drill_frontend_kill,
}
ALL = [*SERVER_DRILLS, "tf-graph"]


def run(names: list[str], quick: bool = False, log: Callable[[str], None] = print
        ) -> list[Result]:
    """Run the named drills (one shared TorchServe for the server drills) and return results."""
    results = []
    server_names = [n for n in names if n in SERVER_DRILLS]
    if server_names:
        run_dir = Path(tempfile.mkdtemp(prefix="drills-"))
        log(f"[drills] starting TorchServe ({MODEL}) on free loopback ports in {run_dir}")
        target = Target(launcher.start(run_dir, launcher.Ports.free(), [MODEL]))
        try:
            for name in server_names:
                log(f"[drills] {name} ...")
                started = time.monotonic()
                try:
                    result = SERVER_DRILLS[name](target, quick)
                except Exception as exc:  # noqa: BLE001  (a drill that crashes is a failed drill)
                    result = Result(name, failures=[f"the drill crashed: {exc!r}"])
                log(f"[drills] {name}: {'pass' if result.passed else 'FAIL'} "
                    f"({time.monotonic() - started:.0f}s)")
                results.append(result)
                if not target.ready() and target.wait_ready(60.0) is None:
                    log("[drills] the server did not recover; stopping the server drills")
                    break
        finally:
            launcher.stop(target.server.run_dir)
    if "tf-graph" in names:
        log("[drills] tf-graph ...")
        try:
            results.append(drill_tf_graph(None, quick))
        except Exception as exc:  # noqa: BLE001
            results.append(Result("TF graph: bombs batched", failures=[f"crashed: {exc!r}"]))
    return results


def report(results: list[Result]) -> str:
    lines = [table(results), ""]
    for r in results:
        for text in r.notes:
            lines.append(f"  {r.drill}: {text}")
        for text in r.failures:
            lines.append(f"  {r.drill}: FAILED: {text}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.drills", description=drills_doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument("--only", help=f"comma-separated drills (default: all): {','.join(ALL)}")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else ALL
    unknown = [n for n in names if n not in ALL]
    if unknown:
        parser.error(f"unknown drills {unknown}; choose from {ALL}")
    results = run(names, args.quick)
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    failed = [r.drill for r in results if not r.passed]
    if failed:
        print(f"\n{len(failed)} drill(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0

