"""Root pytest configuration.

torch is imported first on purpose: in one process, importing tensorflow before torchvision
segfaults, and pytest may collect a TF test module before a torch one.
"""

import torch  # noqa: F401
