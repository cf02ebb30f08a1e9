"""The build: everything `make archive` makes from the catalog into model_store/.

    python -m scripts.build [--model NAME] [--force]      (make archive)

  artifacts.py        .mar archives and SavedModels, each skipped while its fingerprint holds
  export_runtimes.py  the ONNX export a runtime needs, and its agreement check against eager
  export_tf.py        the TF Serving SavedModel with the bundle's signatures
  tf_configs.py       config/tfserving/*, generated from the catalog
  samples.py          the sample photos of the README, the tests and the benchmarks
"""
