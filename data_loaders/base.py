"""The loader interface, loader options and the format registry.

A loader turns one source format into canonical rows and hands them to a
:class:`~data_loaders.writer.DatasetWriter` in chunks. It never holds a whole log in memory:
it reads file by file or CSV block by block. Each row carries ``_file`` (the index the
writer gave the input file) and ``_line`` (1-based line number in that file) so that every
rejected row can be traced back; ``_order`` sets the order within a learner where the file
order is not the answer order (order_id, log_id, start time).

Loader-specific options are declared by each loader (:class:`Option`) and given on the
command line as ``-o name=value``; ``tutor formats`` lists them.
"""

from __future__ import annotations

import contextlib
import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .errors import IngestError, UnknownFormatError
from .inputs import InputFile
from .writer import DatasetWriter


@dataclass(frozen=True)
class Option:
    """A loader option: ``-o name=value`` on the command line."""

    name: str
    type: type
    default: Any
    help: str

    def parse(self, raw: str) -> Any:
        if self.type is bool:
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise IngestError(f"option '{self.name}' expects true or false, got {raw!r}")
        try:
            return self.type(raw)
        except (TypeError, ValueError) as exc:
            raise IngestError(
                f"option '{self.name}' expects {self.type.__name__}, got {raw!r}"
            ) from exc


@dataclass
class LoadContext:
    """What a loader is given: the input, the writer and the parsed options."""

    input: Path
    writer: DatasetWriter
    options: dict[str, Any] = field(default_factory=dict)
    encoding: str = "utf-8"
    concepts: Path | None = None  # --concepts: a side file naming concepts / mapping items


class Loader(ABC):
    """Base class of every source-format loader."""

    name: ClassVar[str]
    summary: ClassVar[str]
    options: ClassVar[tuple[Option, ...]] = ()

    def __init__(self, ctx: LoadContext) -> None:
        self.ctx = ctx
        self.writer = ctx.writer
        self.opts = ctx.options

    @classmethod
    def resolve_options(cls, given: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults overlaid by the given options (strings are parsed); unknown names fail."""
        known = {o.name: o for o in cls.options}
        out = {o.name: o.default for o in cls.options}
        for k, v in given.items():
            key = k.replace("-", "_")
            if key not in known:
                names = ", ".join(sorted(known)) or "none"
                raise IngestError(f"format '{cls.name}' has no option '{k}' (its options: {names})")
            out[key] = known[key].parse(v) if isinstance(v, str) else v
        return out

    @abstractmethod
    def load(self) -> None:
        """Read the input and hand every row to the writer."""

    # helpers shared by loaders -------------------------------------------------
    def register(self, f: InputFile) -> int:
        try:
            size = f.size()
        except OSError:
            size = None
        return self.writer.register_file(f.name, size)

    def reject_read(
        self,
        file: int,
        line: int | None,
        reason: str,
        raw: str | None,
        detail: str | None = None,
        *,
        rows: int = 1,
    ) -> None:
        """Count ``rows`` input rows as read and reject them as one record (raw text cut
        at 2000 characters)."""
        self.writer.count_read(rows)
        self.writer.reject(file, line, reason, raw[:2000] if raw is not None else None, detail)

    def start_progress(self, files: list[InputFile]) -> None:
        total = 0
        for f in files:
            with contextlib.suppress(OSError):
                total += f.size()
        self.writer.progress.start(f"reading {self.name}", total or None)


#: format name -> "module:Class". Modules are imported on demand.
FORMATS: dict[str, str] = {
    "assistments-2009": "data_loaders.assistments:Assistments2009Loader",
    "assistments-2012": "data_loaders.assistments:Assistments2012Loader",
    "assistments-2015": "data_loaders.assistments:Assistments2015Loader",
    "assistments-2017": "data_loaders.assistments:Assistments2017Loader",
    "ednet-kt1": "data_loaders.ednet_kt1:EdNetKT1Loader",
    "ednet-kt2": "data_loaders.ednet_actions:EdNetKT2Loader",
    "ednet-kt3": "data_loaders.ednet_actions:EdNetKT3Loader",
    "ednet-kt4": "data_loaders.ednet_actions:EdNetKT4Loader",
    "three-line": "data_loaders.benchmark_lines:ThreeLineLoader",
    "four-line": "data_loaders.benchmark_lines:FourLineLoader",
    "pykt": "data_loaders.benchmark_lines:PyKTLoader",
    "tabular": "data_loaders.benchmark_tabular:TabularLoader",
    "dkt-synthetic": "data_loaders.benchmark_lines:DKTSyntheticLoader",
    "xapi": "data_loaders.xapi_loader:XAPILoader",
    "simulate": "data_loaders.simulate:SimulateLoader",
}


def get_loader(name: str) -> type[Loader]:
    """The loader class of a format name; an unknown name lists the known ones."""
    target = FORMATS.get(name)
    if target is None:
        known = ", ".join(FORMATS)
        raise UnknownFormatError(f"unknown format {name!r}; known formats: {known}")
    module_name, cls_name = target.split(":")
    module = importlib.import_module(module_name)
    cls: type[Loader] = getattr(module, cls_name)
    return cls


def ingest(
    format_name: str,
    input_path: Path | str,
    out: Path | str,
    *,
    options: Mapping[str, Any] | None = None,
    encoding: str = "utf-8",
    concepts: Path | str | None = None,
    buckets: int = 32,
    keep_expanded: bool = False,
    keep_duplicates: bool = False,
    overwrite: bool = False,
    progress: Any = None,
    on_writer: Callable[[DatasetWriter], None] | None = None,
) -> Any:
    """Ingest ``input_path`` in ``format_name`` into the dataset directory ``out``.

    Returns the written :class:`~data_loaders.writer.Manifest`. Raises
    :class:`IngestError` (nothing written) on input that cannot be read at all.
    """
    from .writer import WriterOptions

    cls = get_loader(format_name)
    resolved = cls.resolve_options(options or {})
    input_path = Path(input_path)
    if format_name != "simulate" and not input_path.exists():
        raise IngestError("input not found", file=str(input_path))
    writer_opts = WriterOptions(
        buckets=buckets,
        merge_multi_skill=not keep_expanded,
        drop_duplicates=not keep_duplicates,
    )
    loader_options = {**resolved, "encoding": encoding}
    if concepts is not None:
        loader_options["concepts"] = str(concepts)
    with DatasetWriter(
        Path(out),
        format_name=format_name,
        options=writer_opts,
        loader_options=loader_options,
        overwrite=overwrite,
        progress=progress,
    ) as writer:
        if on_writer is not None:
            on_writer(writer)
        ctx = LoadContext(
            input=input_path,
            writer=writer,
            options=resolved,
            encoding=encoding,
            concepts=Path(concepts) if concepts is not None else None,
        )
        loader = cls(ctx)
        loader.load()
        writer.progress.finish()
        manifest = writer.close()
    return manifest
