"""Hub artifacts: named subnets saved as standalone checkpoints (`save_subnet`), model cards, the family index,
pushing to the Hub."""

from .family import push_family, render_family_card, write_family_index
from .model_card import SubnetCard, build_model_card, model_card_section, render_model_card
from .push import push_folder_to_hub
from .subnets import (
    SavedSubnet,
    export_subnet,  # noqa: F401 - the old name of save_subnet (it warns when called)
    named_subnet_from_arch,
    resolve_named_archs,
    save_subnet,
)

__all__ = [
    "SavedSubnet",
    "SubnetCard",
    "build_model_card",
    "model_card_section",
    "named_subnet_from_arch",
    "push_family",
    "push_folder_to_hub",
    "render_family_card",
    "render_model_card",
    "resolve_named_archs",
    "save_subnet",
    "write_family_index",
]


def __getattr__(name: str):
    if name == "ExportedSubnet":  # the old name, with its FutureWarning
        from . import subnets

        return subnets.__getattr__(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
