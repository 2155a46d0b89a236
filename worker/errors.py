"""The one exception type whose message is shown to the caller as the job's error."""


class JobError(Exception):
    """A job failed for a reason the caller can act on; the message says what and how to fix it."""


class EngineLoadError(RuntimeError):
    """An engine could not be loaded (missing or corrupt weights, missing runtime)."""
