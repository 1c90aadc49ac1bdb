# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""CPF-CTE: configuration, modeling and image processing (the remote-code set of a saved checkpoint)."""
