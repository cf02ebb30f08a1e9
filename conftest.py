"""Root pytest configuration.

torch and torchvision.ops are imported first on purpose: in one process, importing tensorflow
before torchvision (whose ops pull in torch._dynamo and triton, as the face detector does)
segfaults, and pytest may collect or run a TF test module before a torch one.
"""

import torch  # noqa: F401
import torchvision.ops  # noqa: F401
