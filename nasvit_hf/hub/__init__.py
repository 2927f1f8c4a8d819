"""Hub artifacts: export of named subnets as standalone checkpoints, model cards, pushing to the Hub."""

from .model_card import SubnetCard, build_model_card, model_card_section, render_model_card
from .push import push_folder_to_hub
from .subnets import ExportedSubnet, export_subnet, resolve_named_archs

__all__ = [
    "ExportedSubnet",
    "SubnetCard",
    "build_model_card",
    "export_subnet",
    "model_card_section",
    "push_folder_to_hub",
    "render_model_card",
    "resolve_named_archs",
]
