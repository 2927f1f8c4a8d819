"""Hub artifacts: export of named subnets as standalone checkpoints, model cards, the family index, pushing to the
Hub."""

from .family import push_family, render_family_card, write_family_index
from .model_card import SubnetCard, build_model_card, model_card_section, render_model_card
from .push import push_folder_to_hub
from .subnets import ExportedSubnet, export_subnet, named_subnet_from_arch, resolve_named_archs

__all__ = [
    "ExportedSubnet",
    "SubnetCard",
    "build_model_card",
    "export_subnet",
    "model_card_section",
    "named_subnet_from_arch",
    "push_family",
    "push_folder_to_hub",
    "render_family_card",
    "render_model_card",
    "resolve_named_archs",
    "write_family_index",
]
