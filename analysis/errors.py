"""The single exception type for bad input, so the CLI can print it without a traceback."""


class AnalysisError(ValueError):
    """Input the analysis cannot use; the message says what is wrong and where."""
