"""Training runs on disk: output folders, atomic checkpoints, pruning, and strict resume (classification and
segmentation share it).

Layout of a run's `output_dir`:

    nasvit_run.json          the run's identity (run_id, kind): written when a fresh run starts
    training_config.json     the config the run started with (never rewritten by a resume)
    config_history.jsonl     one line per resume that changed a safe key (step, {key: [old, new]})
    checkpoints/step_<N>/    `accelerator.save_state` + nasvit_checkpoint.json (run_id, step, the config it ran with)

Guarantees:
- a fresh run refuses a folder that holds another run (`RunFolderError`) unless `overwrite_output_dir` is set, and
  then the old run's files are removed before anything is written (never mixed in); other files are left alone;
- a checkpoint is written to a hidden temporary folder and renamed into place, so `checkpoints/step_<N>` is always
  complete; pruning keeps the newest `checkpoints_total_limit` checkpoints *of the current run* and never removes
  another run's (or an unlabelled) checkpoint;
- a resumed run's config is the run's own (`load_run_config`: the checkpoint's recorded config) with only what the
  command line (and a `--config` file it names) sets on top; `start_run` compares that with the record: changes to
  keys outside the config's `RESUME_SAFE_KEYS` (or shrinking one of its `RESUME_GROWABLE_KEYS`, e.g. `max_steps`)
  fail with one `ResumeConfigError` listing each key (old -> new); safe changes are appended to
  `config_history.jsonl`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..config_system import ConfigError, load_yaml_mapping, scale_step_counts, set_dotted, undo_if_the_recipe_fails
from ..utils.io import apply_umask_modes, atomic_write_json, atomic_write_text, make_dir

if TYPE_CHECKING:
    from accelerate import Accelerator

    from .config import TrainingRunConfig

RunConfig = TypeVar("RunConfig", bound="TrainingRunConfig")

__all__ = [
    "CHECKPOINT_RECORD",
    "CONFIG_HISTORY",
    "RUN_MARKER",
    "ResumeConfigError",
    "RunFolderError",
    "TrainState",
    "TrainingRun",
    "config_changes",
    "find_latest_checkpoint",
    "list_checkpoints",
    "load_run_config",
    "prune_checkpoints",
    "read_checkpoint_record",
    "save_checkpoint",
    "start_run",
    "start_run_from_config",
]

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^step_(\d+)$")
RUN_MARKER = "nasvit_run.json"
CHECKPOINT_RECORD = "nasvit_checkpoint.json"
CONFIG_HISTORY = "config_history.jsonl"
# What a training run writes into its output_dir: a folder holding any of these holds a run.
RUN_ARTIFACTS = (
    RUN_MARKER,
    "checkpoints",
    "train_log.jsonl",
    "training_config.json",
    CONFIG_HISTORY,
    "summary.json",
    "final",
    "final_ema",
    "snapshots",
    "model",
    "nasvit_train",
    "nasvit_segmentation",
)
ALWAYS_SAFE_KEYS = frozenset({"output_dir"})
HOW_TO_START_KEYS = frozenset({"resume_from_checkpoint", "overwrite_output_dir"})  # never compared


class RunFolderError(FileExistsError):
    """The output folder cannot be used as asked (it holds another run, or the resume point is missing)."""


class ResumeConfigError(ConfigError):
    """Resuming with a config that changes what the checkpoint ran with."""


class TrainState:
    """Counters that must survive a resume (registered with `accelerator.register_for_checkpointing`)."""

    def __init__(self):
        self.global_step = 0
        self.consecutive_nonfinite = 0
        self.skipped_steps = 0

    def state_dict(self) -> dict[str, int]:
        return {
            "global_step": self.global_step,
            "consecutive_nonfinite": self.consecutive_nonfinite,
            "skipped_steps": self.skipped_steps,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        for key in self.state_dict():
            if key in state:  # checkpoints of older versions hold only global_step
                setattr(self, key, int(state[key]))


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------------------
def list_checkpoints(output_dir: str | os.PathLike, run_id: str | None = None) -> list[tuple[int, Path]]:
    """`[(step, folder)]` of the complete checkpoints under `<output_dir>/checkpoints`, oldest first; with `run_id`,
    only those recorded as that run's."""
    folder = Path(output_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if not match or not path.is_dir():
            continue
        if run_id is not None and read_checkpoint_record(path).get("run_id") != run_id:
            continue
        found.append((int(match.group(1)), path))
    return sorted(found)


def find_latest_checkpoint(output_dir: str | os.PathLike, run_id: str | None = None) -> Path:
    checkpoints = list_checkpoints(output_dir, run_id)
    if not checkpoints:
        raise RunFolderError(
            f"--resume_from_checkpoint latest: no checkpoint under {Path(output_dir) / 'checkpoints'}. Start a fresh "
            "run without --resume_from_checkpoint, or name a checkpoint folder."
        )
    return checkpoints[-1][1]


def read_checkpoint_record(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's `nasvit_checkpoint.json` (run_id, step, config), or {} for a checkpoint without one."""
    path = Path(checkpoint) / CHECKPOINT_RECORD
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def prune_checkpoints(output_dir: str | os.PathLike, keep: int, run_id: str) -> list[Path]:
    """Remove all but the newest `keep` checkpoints of run `run_id` (other runs' checkpoints are never touched)."""
    removed = []
    if keep and keep > 0:
        for _, path in list_checkpoints(output_dir, run_id)[:-keep]:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def save_checkpoint(
    accelerator: Accelerator,
    run: TrainingRun,
    step: int,
    config: dict[str, Any],
    keep: int | None,
    total_steps: int | None = None,
) -> Path:
    """`accelerator.save_state` into a hidden temporary folder, the checkpoint record beside it (with `total_steps`,
    the run's length, which a config may leave to its epochs), then an atomic rename to `checkpoints/step_<step>`;
    then prune to the newest `keep` checkpoints of this run."""
    folder = run.output_dir / "checkpoints"
    final, temporary = folder / f"step_{step}", folder / f".tmp_step_{step}"
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
        make_dir(folder)
        if final.exists() and read_checkpoint_record(final).get("run_id") != run.run_id:
            raise RunFolderError(f"{final} belongs to another run: refusing to replace it.")
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        record = {"run_id": run.run_id, "step": step, "time": time.time(), "config": config}
        if total_steps is not None:
            record["total_steps"] = int(total_steps)
        atomic_write_json(temporary / CHECKPOINT_RECORD, record)
        apply_umask_modes(temporary)  # safetensors writes model.safetensors 0600
        shutil.rmtree(final, ignore_errors=True)
        os.replace(temporary, final)
        prune_checkpoints(run.output_dir, keep or 0, run.run_id)
    accelerator.wait_for_everyone()
    return final


# ----------------------------------------------------------------------------------------------------------------------
# Starting or resuming a run
# ----------------------------------------------------------------------------------------------------------------------
# What a run writes into its output_dir before its first step besides RUN_ARTIFACTS (the recipes' holdout.json).
START_FILES = ("holdout.json",)


@dataclass
class TrainingRun:
    """Where a run writes (`output_dir`), who it is (`run_id`), and where it resumes from (`resume_path`)."""

    output_dir: Path
    run_id: str
    resume_path: Path | None = None
    changes: dict[str, list[Any]] = field(default_factory=dict)  # safe changes of this resume: {key: [old, new]}
    # The folder as start_run found it (None: it did not exist), and config_history.jsonl's text before this resume
    # appended to it: what `undone_on_error` restores.
    found: frozenset[str] | None = None
    history_before: str | None = None

    cancel_undo: Callable[[], None] | None = None

    def started(self) -> None:
        """Call once the start-up (data, model, teachers, optimiser) is built: until then, a recipe that fails
        (`run_recipe`) removes what `start_run` and the start-up wrote (`undo_start`), so a corrected rerun is not
        refused as "an earlier training run"; from here on a failure leaves the run to resume."""
        if self.cancel_undo is not None:
            self.cancel_undo()
            self.cancel_undo = None

    def undo_start(self) -> None:
        """Remove the run marker, training_config.json, config_history.jsonl's new line, holdout.json and the folder
        itself where this run's start wrote them (what was there before stays)."""
        folder = self.output_dir
        if not folder.is_dir():
            return
        found = self.found or frozenset()
        for name in (*RUN_ARTIFACTS, *START_FILES):
            path = folder / name
            if name in found or path.is_symlink():
                continue
            if path.is_dir():
                shutil.rmtree(path)  # a tracker's log folder
            elif path.is_file():
                path.unlink()
        if self.history_before is not None and CONFIG_HISTORY in found:
            atomic_write_text(folder / CONFIG_HISTORY, self.history_before)
        if self.found is None and not any(folder.iterdir()):
            folder.rmdir()


def config_changes(
    old: dict[str, Any], new: dict[str, Any], safe_keys: frozenset[str], growable_keys: frozenset[str] = frozenset()
) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """`(safe, unsafe)` differences `{key: [old, new]}` between a checkpoint's config and a resumed run's. Keys in
    `growable_keys` may grow (a longer `max_steps`); keys the checkpoint did not record (added since) are skipped."""
    safe, unsafe = {}, {}
    for key, value in new.items():
        if key not in old or old[key] == value or key in HOW_TO_START_KEYS:
            continue
        before = old[key]
        grows = (
            key in growable_keys
            and isinstance(before, (int, float))
            and isinstance(value, (int, float))
            and value >= before
        )
        (safe if key in safe_keys or key in ALWAYS_SAFE_KEYS or grows else unsafe)[key] = [before, value]
    return safe, unsafe


def _holds_run(folder: Path) -> list[str]:
    return [name for name in RUN_ARTIFACTS if (folder / name).exists()] if folder.is_dir() else []


def _run_id_of(folder: Path) -> str | None:
    """The run id in the folder's run marker, or None (no marker, or one that is not a run marker)."""
    try:
        run_id = json.loads((folder / RUN_MARKER).read_text(encoding="utf-8")).get("run_id")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None
    return run_id if isinstance(run_id, str) and run_id else None


def _remove_run(folder: Path) -> None:
    for name in RUN_ARTIFACTS:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def _checkpoint_to_resume(resume_from_checkpoint: str, output_dir: str | os.PathLike) -> Path | None:
    """The checkpoint folder a resume names (`"latest"`: the newest of the run in `output_dir`), or None when there is
    none (`start_run` then says what is wrong)."""
    if resume_from_checkpoint != "latest":
        path = Path(resume_from_checkpoint)
        return path if path.is_dir() else None
    checkpoints = list_checkpoints(output_dir, _run_id_of(Path(output_dir)))
    return checkpoints[-1][1] if checkpoints else None


def load_run_config(
    config_cls: type[RunConfig], overrides: dict[str, Any], config_file: str | None, default_file: str | Path
) -> RunConfig:
    """A training recipe's config from its command line (`overrides`, `--config config_file`).

    A fresh run: the YAML file (`config_file`, else `default_file`) with `overrides` on top. A resumed run
    (`--resume_from_checkpoint latest` or a checkpoint folder): the run's own config, as its checkpoint recorded it,
    with only what the command line sets (and the keys of a `--config` file it names) on top, so `--output_dir runs/try
    --resume_from_checkpoint latest` continues runs/try as it was started; `start_run` then checks those changes
    against the record. Resuming from a checkpoint folder without `--output_dir` continues in the run's folder (the
    one holding `checkpoints/`). A checkpoint without a record (an older version) falls back to the YAML file."""
    file_values = load_yaml_mapping(config_file) if config_file else {}
    resume = overrides.get("resume_from_checkpoint", file_values.get("resume_from_checkpoint"))
    if resume is None and not config_file:
        resume = load_yaml_mapping(default_file).get("resume_from_checkpoint")
    if not resume:
        return config_cls.from_yaml(config_file or default_file, overrides)
    output_dir = overrides.get("output_dir", file_values.get("output_dir"))
    if output_dir is None and resume == "latest":
        fresh_run_file = file_values if config_file else load_yaml_mapping(default_file)
        output_dir = fresh_run_file.get("output_dir") or config_cls().output_dir  # where a fresh run would be
    path = _checkpoint_to_resume(str(resume), output_dir or ".")
    record = read_checkpoint_record(path) if path is not None else {}
    if not isinstance(record.get("config"), dict):
        return config_cls.from_yaml(config_file or default_file, overrides)
    values = config_cls.rename_keys(dict(record["config"]), f"the config recorded in {path}")
    names = set(config_cls.field_names())
    values = {key: value for key, value in values.items() if key in names}  # keys removed since: not part of it now
    config_cls.check_keys(file_values, f"config file {config_file!r}")
    config_cls.check_keys(overrides)
    explicit = {
        **config_cls.rename_keys(file_values, f"config file {config_file!r}"),
        **config_cls.rename_keys(overrides, "command-line overrides"),
    }
    for key, value in scale_step_counts(explicit, config_cls, defaults=False).items():
        set_dotted(values, key, value)
    values["resume_from_checkpoint"] = resume
    values["overwrite_output_dir"] = explicit.get("overwrite_output_dir", False)
    if output_dir is None and path.parent.name == "checkpoints":
        values["output_dir"] = str(path.parent.parent)
    elif output_dir is not None:
        values["output_dir"] = output_dir
    return config_cls.from_dict(values, source=f"the config recorded in {path} with the command line on top")


def start_run_from_config(
    config: TrainingRunConfig, kind: str, is_main_process: bool = True, barrier: Callable[[], None] | None = None
) -> TrainingRun:
    """`start_run` with a training config's `output_dir`, `resume_from_checkpoint`, `overwrite_output_dir` and its
    class's `RESUME_SAFE_KEYS` / `RESUME_GROWABLE_KEYS`."""
    return start_run(
        config.output_dir,
        config.to_dict(),
        kind=kind,
        resume_from_checkpoint=config.resume_from_checkpoint,
        overwrite_output_dir=config.overwrite_output_dir,
        safe_keys=type(config).RESUME_SAFE_KEYS,
        growable_keys=type(config).RESUME_GROWABLE_KEYS,
        is_main_process=is_main_process,
        barrier=barrier,
    )


def start_run(
    output_dir: str | os.PathLike,
    config: dict[str, Any],
    *,
    kind: str,
    resume_from_checkpoint: str | None,
    overwrite_output_dir: bool,
    safe_keys: frozenset[str],
    growable_keys: frozenset[str] = frozenset(),
    is_main_process: bool = True,
    barrier: Callable[[], None] | None = None,
) -> TrainingRun:
    """Check the output folder and the resume point, then claim the folder (main process only).

    Fresh run: a folder holding another run fails unless `overwrite_output_dir` (which removes the old run's files
    first); the run marker and `training_config.json` are written. Resume: the checkpoint (`"latest"` = the newest
    under `output_dir`) must exist; its recorded config is compared with `config` (`ResumeConfigError` for unsafe
    changes); safe changes are appended to `config_history.jsonl`. Every check runs before anything is written.

    With several processes, every process calls this with `barrier` (e.g. `accelerator.wait_for_everyone`): all of
    them check the folder before the main process writes to it, and the others then read the run id it wrote, so
    they all agree on one run."""
    sync = barrier if barrier is not None else (lambda: None)
    folder = Path(output_dir)
    existing = _holds_run(folder)
    found = frozenset(os.listdir(folder)) if folder.is_dir() else None
    if resume_from_checkpoint and overwrite_output_dir:
        raise ConfigError(
            "resume_from_checkpoint and overwrite_output_dir contradict each other: resume the run, or delete it "
            "and start over, not both."
        )
    if not resume_from_checkpoint:
        if existing and _run_id_of(folder) is None:
            # No run marker: these files were not written by a training run of this package (or the marker is
            # damaged), so nothing here may delete them, --overwrite_output_dir included.
            raise RunFolderError(
                f"output_dir {str(folder)!r} holds files a training run would write "
                f"({', '.join(name for name in existing if name != RUN_MARKER)}) but no valid {RUN_MARKER}: they were not written by a training run of this package, and neither a fresh run nor "
                "--overwrite_output_dir will replace them. Move them away, or choose another --output_dir."
            )
        if existing and not overwrite_output_dir:
            raise RunFolderError(
                f"output_dir {str(folder)!r} holds an earlier training run ({', '.join(existing)}): resume it with "
                "--resume_from_checkpoint latest, pass --overwrite_output_dir to delete it and start over, or choose "
                "another --output_dir."
            )
        # An overwritten run's files are gone for good: an undone start removes only what this run writes.
        run = TrainingRun(folder, uuid.uuid4().hex, found=found and found - set(existing))
        sync()  # every process has checked the folder before the main process changes it
        if is_main_process:
            if existing:
                logger.warning(
                    "overwrite_output_dir: removing the earlier run in %s (%s)", folder, ", ".join(existing)
                )
                _remove_run(folder)
            make_dir(folder)
            atomic_write_json(folder / RUN_MARKER, {"run_id": run.run_id, "kind": kind, "started": time.time()})
            atomic_write_json(folder / "training_config.json", config)
        sync()
        if not is_main_process and barrier is not None:
            run = TrainingRun(folder, _run_id_of(folder) or run.run_id, found=run.found)
        if is_main_process:
            run.cancel_undo = undo_if_the_recipe_fails(run.undo_start)
        return run

    path = Path(resume_from_checkpoint)
    if resume_from_checkpoint == "latest":
        path = find_latest_checkpoint(folder, _run_id_of(folder))
    if not path.is_dir():
        raise RunFolderError(
            f"--resume_from_checkpoint {resume_from_checkpoint!r} is not a checkpoint folder: name a "
            f"checkpoints/step_<N> folder, or 'latest' for the newest under {str(folder)!r}."
        )
    record = read_checkpoint_record(path)
    run_id = record.get("run_id") or _run_id_of(folder) or uuid.uuid4().hex
    folder_run = _run_id_of(folder)
    if existing and folder_run is not None and folder_run != run_id:
        raise RunFolderError(
            f"output_dir {str(folder)!r} holds another run than checkpoint {str(path)!r}: resume into that "
            "checkpoint's own output_dir or an empty folder."
        )
    changes: dict[str, list[Any]] = {}
    if "config" in record:
        recorded = dict(record["config"])
        if recorded.get("max_steps") is None and config.get("max_steps") is not None and "total_steps" in record:
            recorded["max_steps"] = record["total_steps"]  # the length its epochs gave the run
        changes, unsafe = config_changes(recorded, config, safe_keys, growable_keys)
        if unsafe:
            listed = "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in sorted(unsafe.items()))
            raise ResumeConfigError(
                f"cannot resume {str(path)!r} with a different config ({listed}): these keys change the model, data, "
                "optimisation or schedule. Resume with the checkpoint's values, or start a fresh run (another "
                "--output_dir, or --overwrite_output_dir)."
            )
    else:
        logger.warning("checkpoint %s records no config (an older version wrote it): the config is not checked", path)
    history = folder / CONFIG_HISTORY
    history_before = history.read_text(encoding="utf-8") if history.is_file() else None
    run = TrainingRun(folder, run_id, path, changes, found=found, history_before=history_before)
    if is_main_process:
        run.cancel_undo = undo_if_the_recipe_fails(run.undo_start)
    sync()
    if is_main_process:
        make_dir(folder)
        if folder_run is None:
            atomic_write_json(folder / RUN_MARKER, {"run_id": run_id, "kind": kind, "started": time.time()})
        if not (folder / "training_config.json").exists():
            atomic_write_json(folder / "training_config.json", record.get("config", config))
        if changes:
            entry = {"resumed_from": str(path), "step": record.get("step"), "time": time.time(), "changes": changes}
            history = folder / CONFIG_HISTORY
            previous = history.read_text(encoding="utf-8") if history.exists() else ""
            atomic_write_text(history, previous + json.dumps(entry) + "\n")
    sync()
    return run
