"""`make bench`: one run, side by side, on one TorchServe started by the launcher.

    python -m scripts.bench [--quick] [--out build/bench]     (BENCH_QUICK=1 = --quick)

Targets, all on one TorchServe (free loopback ports, token auth on) and measured interleaved:
  noop               a handler that answers without reading the body: the server's floor;
  stock              TorchServe's own image_classifier with the same weights as TorchScript;
  handler:<runtime>  this bundle's image_classifier, one archive per runtime;
  raw:<runtime>      the same network in this process, no server: decode + preprocess + model on
                     a batch of `concurrency` images (the handler's upper bound);
  model:<name>       the catalog's other models, at concurrency 1 and 8.
Images: samples/cat.jpg (small) and a generated 12-megapixel JPEG. Concurrency 1, 2, 4, 8, 16
(quick: 1 and 8). Outputs in build/bench/: report.md, results.json, *.png. See docs/benchmarks.md.
"""
