"""Pure loss functions (stable names); objectives in ``tunevl.objectives`` build on them.

Embeddings are L2-normalised by the caller and ``logit_scale`` is the multiplier (already
exponentiated). Under ``torch.distributed`` the contrastive losses gather with gradient and match
one process on the concatenated batch; see each docstring for what a rank's returned value means.
"""

from tunevl.losses.classification import class_logits, classification_loss
from tunevl.losses.contrastive import info_nce, sigmoid_loss
from tunevl.losses.counting import counting_loss
from tunevl.losses.distributed import gather_with_grad
from tunevl.losses.hard_negatives import negclip_loss
from tunevl.losses.preference import dpo_loss, svco_loss
from tunevl.losses.sequence import next_token_loss, sequence_logps

__all__ = [
    "info_nce", "sigmoid_loss", "counting_loss", "negclip_loss", "classification_loss", "class_logits", "sequence_logps",
    "next_token_loss", "dpo_loss", "svco_loss", "gather_with_grad",
]
