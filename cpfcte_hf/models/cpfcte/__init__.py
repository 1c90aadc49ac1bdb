# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""CPF-CTE: configuration, modeling and image processing, and the rest of the pipelines' remote-code set (the
inference core, the dense CRF, the pipelines, class names, the confusion matrix and the palette)."""


def register_cpfcte() -> None:
    """Registers CPF-CTE with transformers' Auto classes, and for `save_pretrained` to write its remote code."""
    from .. import register_model
    from .configuration_cpfcte import CPFCTEConfig
    from .image_processing_cpfcte import CPFCTEImageProcessor
    from .modeling_cpfcte import CPFCTEForWeaklySupervisedSegmentation

    register_model(CPFCTEConfig, CPFCTEForWeaklySupervisedSegmentation, CPFCTEImageProcessor, True)
