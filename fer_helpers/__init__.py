"""fer_helpers: the library behind the study's notebooks (data, degradation, quality check, runner, report)."""

__version__ = "0.1.0"
