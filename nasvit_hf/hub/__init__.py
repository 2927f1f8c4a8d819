"""Hub artifacts: export of named subnets as standalone checkpoints, model cards, pushing to the Hub."""

from .subnets import ExportedSubnet, export_subnet, resolve_named_archs
from .model_card import SubnetCard, render_model_card
from .push import push_folder_to_hub

__all__ = [
    "ExportedSubnet",
    "SubnetCard",
    "export_subnet",
    "push_folder_to_hub",
    "render_model_card",
    "resolve_named_archs",
]
