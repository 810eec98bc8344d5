"""Customer-base models: BG/NBD, Pareto/NBD and Gamma-Gamma, plus RFM summaries."""

from crmseg.models.betageo import BetaGeo
from crmseg.models.gammagamma import GammaGamma
from crmseg.models.paretonbd import ParetoNBD
from crmseg.models.summary import compress, rfm_summary

__all__ = ["BetaGeo", "GammaGamma", "ParetoNBD", "compress", "rfm_summary"]
