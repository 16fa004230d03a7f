"""sentence-transformers files: carry a source model's modules over into a folder bertscope saves.

A sentence-transformers model is a Hugging Face folder plus a few small files that say how to turn token states into
one sentence vector: ``modules.json`` (the module list: Transformer, Pooling, Normalize, Dense...), one subfolder per
module after the first (``1_Pooling/config.json``...), the Transformer module's ``sentence_bert_config.json``
(``max_seq_length``, ``do_lower_case``) and ``config_sentence_transformers.json`` (similarity function, prompts).
Without them ``SentenceTransformer(folder)`` silently builds a different model (mean pooling, no Normalize, the
tokenizer's maximum length), so every folder bertscope saves from such a source must carry them.

Only the depth can differ between the source and the saved encoder. Nothing in these files names it in the usual
case; where something does (a depth key in the Transformer's ``config_kwargs``, a layer-indexed module such as
``WeightedLayerPooling``) it is rewritten or, when that has no meaning, refused with one line. Modules that hold a
model of their own (a Router, a Transformer in a subfolder) or custom code are refused too: bertscope changed only
the encoder in the folder's root, so carrying them would describe a model that does not exist.

Every file is carried from inside the source folder only: a file or module folder that is a link leading out of it
(to a secret elsewhere on the machine, say) is refused in one line before anything is written, never followed and
never skipped quietly (a skipped module file would leave a folder that loads as another model). A hub snapshot's
files are links into the same repository's cache (``blobs/``), so for a snapshot the boundary is that repository
folder.

The file handling needs no ``sentence_transformers`` import: it is an optional dependency for users.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from bertscope.core.errors import BertscopeError
from bertscope.core.results import write_text_atomic
from bertscope.models import families, loading

__all__ = [
    "MODULES_FILE",
    "SentenceTransformersFiles",
    "copy_sentence_transformers_files",
    "find_sentence_transformers_files",
    "is_sentence_transformers_folder",
]

MODULES_FILE = "modules.json"
MODEL_CONFIG_FILE = "config_sentence_transformers.json"
# The Transformer module's own config; sentence-transformers still reads the legacy per-family names.
TRANSFORMER_CONFIG_FILES = ("sentence_bert_config.json", "sentence_roberta_config.json",
                            "sentence_distilbert_config.json", "sentence_camembert_config.json",
                            "sentence_albert_config.json", "sentence_xlm-roberta_config.json",
                            "sentence_xlnet_config.json")
# Keys of the Transformer config whose dicts reach transformers' config (so a depth key there overrides ours).
CONFIG_KWARG_KEYS = ("config_kwargs", "config_args", "model_kwargs", "model_args")
CARD_FILE = "README.md"
ROOT_PATTERNS = [MODULES_FILE, MODEL_CONFIG_FILE, *TRANSFORMER_CONFIG_FILES]


def _depth_keys() -> set[str]:
    return {family.depth_key for family in families.FAMILIES} | {"num_layers"}


def _layer_list_keys() -> set[str]:
    return {family.layer_types_key for family in families.FAMILIES if family.layer_types_key}


@dataclass(frozen=True)
class SentenceTransformersFiles:
    """What a source holds of sentence-transformers and how it is written into a new folder.

    ``folder`` is where the source's small files lie (the source folder, or its hub snapshot; None when the hub
    could not be read), so a model card can read the source's README.md from it too. ``files`` are paths relative
    to ``folder`` (posix), in the order they are written; ``rewritten`` maps the ones adapted to the new depth to
    their new text, ``adaptations`` says what changed, and ``note`` says why nothing was found (``files`` empty)
    when the source is not a sentence-transformers model or could not be read (``source_read`` False: a hub id
    offline with nothing cached, say).
    """

    source: str
    folder: Path | None
    files: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    rewritten: Mapping[str, str] = field(default_factory=dict)
    adaptations: tuple[str, ...] = ()
    note: str = ""
    source_read: bool = True
    boundary: Path | None = None  # the folder no carried file may lie outside (None: ``folder``)

    @property
    def found(self) -> bool:
        return bool(self.files)

    def write(self, target: str | Path) -> list[str]:
        """Copy (or write adapted) every file into ``target``; returns the relative paths written."""
        if not self.files or self.folder is None:
            return []
        target = Path(target)
        for rel in self.files:
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if rel in self.rewritten:
                write_text_atomic(dest, self.rewritten[rel])
            else:
                shutil.copyfile(_inside(self.folder, rel, self.boundary), dest)
        return list(self.files)

    def to_dict(self) -> dict[str, Any]:
        return {"files": list(self.files), "modules": list(self.modules), "adaptations": list(self.adaptations),
                "note": self.note, "source_read": self.source_read}


def is_sentence_transformers_folder(path: str | Path) -> bool:
    """True when the local folder ``path`` holds a readable ``modules.json`` (what makes it a sentence-transformers
    model for ``SentenceTransformer``)."""
    try:
        return isinstance(json.loads((Path(path) / MODULES_FILE).read_text(encoding="utf-8")), list)
    except (OSError, ValueError):
        return False


def _inside(folder: Path, rel: str, boundary: Path | None = None) -> Path:
    """``folder / rel`` with every link resolved, refused in one line when it leads outside ``boundary`` (default
    ``folder``): a model's files are copied from the model, never from elsewhere through a link."""
    limit = (boundary or folder).resolve()
    real = (folder / rel).resolve()
    if not real.is_relative_to(limit):
        raise BertscopeError(f"cannot carry the sentence-transformers files: {rel} in {folder} is a link to {real}, "
                             "outside the model folder; bertscope copies only files inside the source folder")
    return real


def _relative(path: Any, what: str) -> str:
    """A module path from modules.json as a safe relative posix path ("" for the root)."""
    if not isinstance(path, str):
        raise BertscopeError(f"cannot carry the sentence-transformers files: {what} has a path that is not a string")
    windows = PureWindowsPath(path)
    if windows.anchor or ".." in windows.parts or "\0" in path:
        raise BertscopeError(f"cannot carry the sentence-transformers files: {what} has the unsafe path {path!r}")
    clean = PurePosixPath(path.replace("\\", "/")).as_posix()
    return "" if clean == "." else clean


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BertscopeError(f"cannot carry the sentence-transformers files: {what} is unreadable ({exc})") from None


def _adapt_transformer_config(config: dict[str, Any], rel: str, num_layers: int | None) -> list[str]:
    """Rewrite depth keys the Transformer config passes to transformers; per-layer lists cannot follow a depth."""
    changes: list[str] = []
    for kwargs_key in CONFIG_KWARG_KEYS:
        kwargs = config.get(kwargs_key)
        if not isinstance(kwargs, dict):
            continue
        for key in sorted(_layer_list_keys() & set(kwargs)):
            raise BertscopeError(f"cannot carry the sentence-transformers files: {rel} sets {kwargs_key}.{key}, "
                                 "a per-layer list that bertscope cannot adapt; remove it from the source first")
        for key in sorted(_depth_keys() & set(kwargs)):
            if num_layers is not None and kwargs[key] != num_layers:
                changes.append(f"{rel}: {kwargs_key}.{key} {kwargs[key]} -> {num_layers}")
                kwargs[key] = num_layers
    return changes


def _check_module_folder(folder: Path, rel: str, name: str, num_layers: int | None,
                         boundary: Path | None = None) -> list[str]:
    """The files of one module's subfolder; refuses a model of its own, depth-tied settings of another depth and a
    link out of ``boundary``."""
    files: list[str] = []
    for path in sorted(p for p in (folder / rel).rglob("*") if p.is_file()):
        inner = path.relative_to(folder).as_posix()
        _inside(folder, inner, boundary)
        files.append(inner)
        if path.suffix != ".json":
            continue
        data = _read_json(path, inner)
        if not isinstance(data, dict):
            continue
        if "model_type" in data or "architectures" in data:
            raise BertscopeError(f"cannot carry the sentence-transformers files: module {name} keeps a model of its "
                                 f"own ({inner}), which bertscope did not change")
        for key in sorted(_depth_keys() & set(data)):
            if num_layers is not None and data[key] != num_layers:
                raise BertscopeError(f"cannot carry the sentence-transformers files: module {name} is tied to "
                                     f"{data[key]} layers ({inner}: {key}) and cannot follow the new depth "
                                     f"{num_layers}")
    return files


def _plan(source: str, folder: Path, num_layers: int | None,
          boundary: Path | None = None) -> SentenceTransformersFiles:
    """Read ``folder``'s modules and decide every file to write (nothing is written here); every file read or
    carried lies inside ``boundary`` (default ``folder``)."""
    for rel in [MODULES_FILE, MODEL_CONFIG_FILE, *TRANSFORMER_CONFIG_FILES]:
        if (folder / rel).exists():
            _inside(folder, rel, boundary)
    entries = _read_json(folder / MODULES_FILE, MODULES_FILE)
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise BertscopeError(f"cannot carry the sentence-transformers files: {MODULES_FILE} is not a list of modules")
    files = [MODULES_FILE]
    rewritten: dict[str, str] = {}
    adaptations: list[str] = []
    modules: list[str] = []
    if (folder / MODEL_CONFIG_FILE).is_file():
        _read_json(folder / MODEL_CONFIG_FILE, MODEL_CONFIG_FILE)  # names no depth: carried as it is
        files.append(MODEL_CONFIG_FILE)
    has_root = False
    for entry in entries:
        kind = str(entry.get("type", ""))
        name = f"{entry.get('name', entry.get('idx', '?'))} ({kind or 'no type'})"
        modules.append(kind)
        if not kind.startswith("sentence_transformers."):
            raise BertscopeError(f"cannot carry the sentence-transformers files: module {name} is custom code; "
                                 "bertscope carries only sentence-transformers' own modules")
        rel = _relative(entry.get("path", ""), f"module {name}")
        if rel:
            _inside(folder, rel, boundary)
            files += _check_module_folder(folder, rel, name, num_layers, boundary)
            continue
        has_root = True
        for config_name in TRANSFORMER_CONFIG_FILES:
            if (folder / config_name).is_file():
                config = _read_json(folder / config_name, config_name)
                if isinstance(config, dict):
                    changes = _adapt_transformer_config(config, config_name, num_layers)
                    if changes:
                        adaptations += changes
                        rewritten[config_name] = json.dumps(config, indent=2) + "\n"
                files.append(config_name)
    if not has_root:
        raise BertscopeError("cannot carry the sentence-transformers files: no module of the source reads the "
                             "folder's root, where bertscope saves the encoder (an old layout with the Transformer "
                             "in a subfolder); re-save the source with a current sentence-transformers first")
    return SentenceTransformersFiles(source=source, folder=folder, files=tuple(dict.fromkeys(files)),
                                     modules=tuple(modules), rewritten=rewritten, adaptations=tuple(adaptations),
                                     boundary=boundary)


def _hub_snapshot(repo_id: str) -> tuple[Path | None, bool, str]:
    """(local snapshot folder with the repo's small files, whether it has ``modules.json``, note), through the
    Hugging Face cache as transformers loads the weights: downloaded when online, the cached copy when offline."""
    from huggingface_hub import snapshot_download

    with loading.quiet_hugging_face():
        try:
            root = Path(snapshot_download(repo_id, allow_patterns=[*ROOT_PATTERNS, CARD_FILE]))
            if not (root / MODULES_FILE).is_file():
                return root, False, f"no sentence-transformers files found: {repo_id} has no {MODULES_FILE}"
            entries = _read_json(root / MODULES_FILE, MODULES_FILE)
            paths = [_relative(e.get("path", ""), "a module") for e in entries if isinstance(e, dict)]
            patterns = [f"{p}/*" for p in paths if p]
            if patterns:
                root = Path(snapshot_download(repo_id, allow_patterns=patterns))
        except (OSError, ValueError) as exc:  # offline and not cached, unknown repo, hub errors: all end here
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return None, False, f"no sentence-transformers files found: {repo_id} could not be read from the hub " \
                                f"or its cache ({why})"
    return root, True, ""


def find_sentence_transformers_files(source: str | Path | None, *,
                                     num_layers: int | None = None) -> SentenceTransformersFiles:
    """What ``source`` (a model folder, a hub id, or None for the embedded default, resolved as
    :func:`bertscope.models.loading.resolve_model_source` does) holds of sentence-transformers, adapted to an encoder of
    ``num_layers`` layers (None: the source's depth, nothing adapted).

    Raises :class:`~bertscope.core.errors.BertscopeError` (one line) for what cannot be carried, before anything is
    written; a source without the files, or a hub id that cannot be reached, gives an empty result with a note.
    """
    resolved = loading.resolve_model_source(None if source is None else str(source))
    if Path(resolved).is_dir():
        folder: Path | None = Path(resolved)
        found = is_sentence_transformers_folder(resolved)
        note = "" if found else f"no sentence-transformers files found: the source has no {MODULES_FILE}"
    else:
        folder, found, note = _hub_snapshot(resolved)
    if folder is None or not found:
        return SentenceTransformersFiles(source=resolved, folder=folder, note=note, source_read=folder is not None)
    # a hub snapshot (<repo>/snapshots/<commit>) links its files into <repo>/blobs
    boundary = folder.parents[1] if not Path(resolved).is_dir() and folder.parent.name == "snapshots" else None
    return _plan(resolved, folder, num_layers, boundary)


def copy_sentence_transformers_files(source: str | Path | None, target: str | Path, *,
                                     num_layers: int | None = None) -> list[str]:
    """Carry ``source``'s sentence-transformers files into ``target`` (adapted to ``num_layers`` layers); returns
    the relative paths carried, ``[]`` when the source has none. ``target`` must already hold the encoder."""
    return find_sentence_transformers_files(source, num_layers=num_layers).write(target)
