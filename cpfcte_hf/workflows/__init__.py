# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Workflows that chain the commands: `run` (every step of a preset), `reproduce` (the paper's tables), `demo`."""
