# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The models, one self-contained folder each, as transformers' `models/<name>/`: `cpfcte` (CPF-CTE) and
`deeplab_v2` (DeepLab-v2). Each folder's configuration, modeling and image-processing files are the remote code a
saved checkpoint carries; they import nothing else of this package.
"""
