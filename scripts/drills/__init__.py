"""Fault and abuse drills against the real TorchServe (started by the launcher on free loopback
ports, token authorization on) and against the real SavedModel run in-process by TensorFlow.

    python -m scripts.drills [--quick] [--only NAME[,NAME...]] [--json PATH]     (make drills)

Prints one row per drill: requests sent; answers by class (2xx / 4xx / 5xx); `conn err` (the
connection failed clearly: refused or reset); `lost` (neither an answer nor an error before the
deadline: must be 0); worker restarts; recovery seconds; peak worker RSS. Exits 1 when any
drill's expectation failed (each failed expectation is printed under the table).

Every loop is bounded in count and in time, and every connection goes to 127.0.0.1. --quick
runs smaller counts (tests/test_drills.py runs a subset of the drills that way).
"""
