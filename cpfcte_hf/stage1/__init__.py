# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Stage 1: CPF-CTE trained from image-level labels (`trainer`: Top-K BCE, the two-stage schedule, L_ET;
`train`: arguments and the run).
"""
