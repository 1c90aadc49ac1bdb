# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""One module per `cpfcte-hf` command: each parses its arguments, checks its inputs and calls the package."""
