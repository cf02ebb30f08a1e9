"""Custom TorchServe handlers on one small shared base (handlers.base.BatchHandler).

The whole package is copied into every .mar (scripts/build.py), so handler modules import each
other as `handlers.<module>` both in the repo and inside a TorchServe worker.
"""
