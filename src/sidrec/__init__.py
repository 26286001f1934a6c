"""sidrec: generative recommendation with semantic item IDs (TIGER, LETTER, VQ-Rec) and SASRec baselines."""

__version__ = "0.1.0"

from sidrec.errors import SidrecError  # noqa: E402

__all__ = ["SidrecError", "__version__"]
