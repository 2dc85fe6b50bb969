"""csrl: contrastive sentence representation learning.

Train sentence encoders with contrastive and non-contrastive objectives, evaluate them with the
SentEval/SimCSE STS protocol, and explain the geometry they learn.
"""

from __future__ import annotations

__version__ = "0.1.0"
