# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Stage 2: a segmentation network (DeepLab-v2 by default) trained on the pseudo-labels (`trainer`, `train`)."""
