"""Ingestion: every supported log format into one validated, canonical Parquet dataset."""

from .base import FORMATS, LoadContext, Loader, Option, get_loader, ingest
from .dataset import Dataset, open_dataset
from .errors import DatasetError, IngestError, UnknownFormatError
from .schema import INTERACTIONS, SCHEMA_VERSION
from .writer import DatasetWriter, Manifest, WriterOptions

__all__ = [
    "FORMATS",
    "INTERACTIONS",
    "SCHEMA_VERSION",
    "Dataset",
    "DatasetError",
    "DatasetWriter",
    "IngestError",
    "LoadContext",
    "Loader",
    "Manifest",
    "Option",
    "UnknownFormatError",
    "WriterOptions",
    "get_loader",
    "ingest",
    "open_dataset",
]
