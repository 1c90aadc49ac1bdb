# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Small utilities below everything else: fingerprints (`fingerprint`), signal handling (`interrupts`)."""
