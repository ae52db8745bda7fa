"""Model families as views over Hugging Face models.

A family view wraps a loaded ``transformers`` model and knows how that family
turns records into tensors and tensors into what objectives need (embeddings,
log-probs). Adapters are injected into the wrapped model; views never subclass it.
"""

from tunevl.models.registry import (
    DUAL_ENCODER,
    FAMILIES,
    GENERATIVE,
    Family,
    ModelConfig,
    detect_family,
    family_kind,
    get_family,
    load_view,
    resolve_dtype,
)

__all__ = ["DUAL_ENCODER", "FAMILIES", "GENERATIVE", "Family", "ModelConfig", "detect_family", "family_kind", "get_family",
           "load_view", "resolve_dtype"]
