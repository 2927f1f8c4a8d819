"""What every step of one search holds: the supernet, the search config, the results folder and the arch encoder
(`SearchContext`, which `SearchRun` makes once and gives to `SubnetEvaluator` and `LatencySession`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..models.configuration_nasvit import NASViTConfig
from ..models.modeling_nasvit import NASViTForImageClassification
from .config import SearchConfig
from .encoding import ArchEncoder
from .results import SearchResults

__all__ = ["SearchContext", "SearchStep"]


@dataclass(frozen=True)
class SearchContext:
    """One search's `supernet`, its search `config`, the `results` folder and the `encoder` of the supernet's space."""

    supernet: NASViTForImageClassification
    config: SearchConfig
    results: SearchResults
    encoder: ArchEncoder

    @property
    def model_config(self) -> NASViTConfig:
        return self.supernet.config


class SearchStep:
    """The base of a search step: the context's fields as attributes (`model_config` is the supernet's config)."""

    def __init__(self, context: SearchContext):
        self.context = context
        self.supernet = context.supernet
        self.model_config = context.model_config
        self.config = context.config
        self.results = context.results
        self.encoder = context.encoder
