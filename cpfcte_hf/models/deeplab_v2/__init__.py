# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""DeepLab-v2 (ResNet-101, output stride 8, ASPP): configuration, modeling, its image processor and the
conversion of kazuto1011's COCO-initialised weights.
"""
