"""Moved to :mod:`tunevl.models.tiny.siglip`; these names stay importable from here."""

from tunevl.models.tiny.siglip import *  # noqa: F401,F403
from tunevl.models.tiny.siglip import INIT_LOGIT_BIAS, INIT_LOGIT_SCALE, TINY_SIGLIP_SPEC  # noqa: F401
from tunevl.models.tiny.siglip import __all__  # noqa: F401
