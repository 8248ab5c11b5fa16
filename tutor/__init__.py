"""kt-tutor: knowledge tracing and intelligent tutoring backend."""

__version__ = "0.1.0"
