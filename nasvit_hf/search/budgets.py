"""A search's budgets: MACs budgets in MACs (absolute, or a fraction of the space's MACs range), latency budgets in
predicted milliseconds (absolute, or "no slower than" a named subnet already searched), the order they are searched
in (a budget after the one it depends on), and the family rule that a larger MACs budget's subnet costs strictly more
MACs than every smaller one's (`SearchRun` asks; nothing here measures or evaluates)."""

from __future__ import annotations

import logging

import numpy as np

from ..macs import count_macs
from ..models.configuration_nasvit import NASViTConfig
from .config import BudgetSpec, SearchConfig
from .efficiency import MacsEfficiency
from .encoding import ArchEncoder
from .evolution import EvolutionResult
from .named import SearchedSubnet

__all__ = ["SearchBudgets"]

logger = logging.getLogger(__name__)


class SearchBudgets:
    """The budgets of `config` for the supernet `model_config` (its space's smallest and largest MACs)."""

    def __init__(self, config: SearchConfig, model_config: NASViTConfig, encoder: ArchEncoder):
        self.config = config
        self.model_config = model_config
        self.encoder = encoder
        self.smallest_macs = count_macs(model_config, model_config.smallest_arch())
        self.largest_macs = count_macs(model_config, model_config.largest_arch())

    def macs_value(self, budget: BudgetSpec) -> float:
        """A MACs budget in MACs; one below the space's smallest subnet is an error naming it."""
        if budget.macs_millions is not None:
            value = budget.macs_millions * 1e6
        else:
            value = self.smallest_macs + budget.macs_fraction * (self.largest_macs - self.smallest_macs)
        if value < self.smallest_macs:
            smallest = self.model_config.smallest_arch()
            raise ValueError(
                f"budget {budget.name!r} ({value / 1e6:.2f} M MACs) is below the smallest subnet of this supernet's "
                f"space, {self.smallest_macs / 1e6:.2f} M MACs ({smallest}); no subnet fits: raise the budget."
            )
        return value

    def ordered(self, names: list[str] | None = None) -> list[BudgetSpec]:
        """The budgets to search (with the ones they depend on, first), MACs budgets validated up front."""
        wanted = [self.config.budget(name) for name in names] if names else list(self.config.budgets)
        ordered: list[BudgetSpec] = []

        def add(budget: BudgetSpec) -> None:
            if budget in ordered:
                return
            if budget.latency_of is not None:
                add(self.config.budget(budget.latency_of))
            ordered.append(budget)

        for budget in wanted:
            add(budget)
        for budget in ordered:
            if budget.metric == "macs":
                self.macs_value(budget)
        return ordered

    def value(self, budget: BudgetSpec, named: dict[str, SearchedSubnet], latency) -> tuple[float, float | None]:
        """The budget in the efficiency function's units (MACs, or ms of predicted latency: `latency` is the search's
        `LatencyEfficiency`), and for `latency_of` budgets the nominal (measured) latency of the reference subnet."""
        if budget.metric == "macs":
            return self.macs_value(budget), None
        nominal = None
        if budget.latency_ms is not None:
            value = budget.latency_ms
        else:
            # "No slower than A0" is judged by one yardstick: the latency model's prediction for A0's arch (its
            # measured latency, the nominal budget, is recorded too; measurement noise would otherwise let the
            # budget fall below what the model predicts for archs as fast as A0).
            nominal = named[budget.latency_of].latency_ms
            value = named[budget.latency_of].predicted_latency_ms
        smallest = latency(self.encoder.encode(self.model_config.smallest_arch())[None])[0]
        if value < smallest:
            raise ValueError(
                f"budget {budget.name!r} ({value:.3f} ms) is below the predicted latency of the smallest subnet "
                f"({smallest:.3f} ms, {self.model_config.smallest_arch()}); no subnet fits: raise the budget."
            )
        return value, nominal

    def family_member(
        self, budget: BudgetSpec, result: EvolutionResult, named: dict[str, SearchedSubnet], macs: MacsEfficiency
    ) -> tuple[np.ndarray, str | None]:
        """A MACs-budget winner that costs more MACs than every smaller-budget name already searched (A0 < A1 < ...
        strictly): the best-predicted runner-up of the final population that does, else the winner itself."""
        if budget.metric != "macs":
            return result.genes, None
        value = self.macs_value(budget)
        smaller = [
            named[other.name].macs
            for other in self.config.budgets
            if other.metric == "macs"
            and other.name != budget.name
            and other.name in named
            and self.macs_value(other) < value
        ]
        if not smaller:
            return result.genes, None
        floor = max(smaller)
        costs = macs(result.final_population)
        for index, (genes, cost) in enumerate(zip(result.final_population, costs)):
            if cost > floor:
                if index == 0:  # the winner itself
                    return genes, None
                return genes, (
                    f"the best predicted arch costs no more MACs than a smaller budget's ({floor / 1e6:.3f} M): the "
                    "best runner-up above that was taken, so that the family grows strictly in MACs"
                )
        logger.warning(
            "%s: no arch of the final population exceeds %.3f M MACs; the family is not strict",
            budget.name,
            floor / 1e6,
        )
        return result.genes, f"no arch within the budget found above the smaller budget's {floor / 1e6:.3f} M MACs"
