# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""CPF-CTE: configuration, modeling and image processing (the remote-code set of a saved checkpoint)."""


def register_cpfcte() -> None:
    """Registers CPF-CTE with transformers' Auto classes, and for `save_pretrained` to write its remote code."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForSemanticSegmentation

    from .. import declare_no_video_processor
    from .configuration_cpfcte import CPFCTEConfig
    from .image_processing_cpfcte import CPFCTEImageProcessor
    from .modeling_cpfcte import CPFCTEForWeaklySupervisedSegmentation

    AutoConfig.register(CPFCTEConfig.model_type, CPFCTEConfig, exist_ok=True)
    AutoModel.register(CPFCTEConfig, CPFCTEForWeaklySupervisedSegmentation, exist_ok=True)
    AutoModelForSemanticSegmentation.register(CPFCTEConfig, CPFCTEForWeaklySupervisedSegmentation, exist_ok=True)
    AutoImageProcessor.register(CPFCTEConfig, image_processor_classes={"pil": CPFCTEImageProcessor}, exist_ok=True)
    declare_no_video_processor(CPFCTEConfig)
    # `save_pretrained` then writes `auto_map` and copies the source files, so that a checkpoint loads with
    # `trust_remote_code=True` where this package is not installed.
    CPFCTEConfig.register_for_auto_class()
    CPFCTEForWeaklySupervisedSegmentation.register_for_auto_class("AutoModelForSemanticSegmentation")
    CPFCTEImageProcessor.register_for_auto_class("AutoImageProcessor")
