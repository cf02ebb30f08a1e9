"""Custom TorchServe handlers on one small shared base.

  base.py        BatchHandler (the shared base: per-request isolation, batching, bisection of a
                 failed model call) and Item, the record each input travels in
  envelopes.py   wire formats: image and text request forms -> inputs and parameters
  images.py      untrusted image bytes -> RGB (six formats, pixel limits), shared preprocessing
  errors.py      RequestError and its kinds: one request's 4xx/500 and JSON body
  <kind>.py      one handler class per module (TorchServe loads exactly one class from it):
                 image_classifier, text_embedder, face_detector

The whole package is copied into every .mar (scripts/build/artifacts.py), so handler modules import each
other as `handlers.<module>` both in the repo and inside a TorchServe worker.
"""
