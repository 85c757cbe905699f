"""Exception hierarchy: every error the package raises on purpose derives from ``MonotherError``."""


class MonotherError(Exception):
    """Base class of the package's own errors."""


class ConfigError(MonotherError, ValueError):
    """A configuration value (parameter, YAML, CLI argument) is invalid."""


class CalibrationError(MonotherError, ValueError):
    """Camera intrinsics or an extrinsic transform is unusable (NaN, zero focal length, bad rotation)."""


class CheckpointError(MonotherError):
    """A checkpoint cannot be read or does not match the model layout."""


class BackendUnavailableError(MonotherError, RuntimeError):
    """An inference backend is requested but its libraries or hardware are missing."""


class EngineFileError(MonotherError):
    """A serialized inference engine is corrupt, stale or built for another configuration."""


class BagError(MonotherError):
    """A rosbag2 file is missing, truncated, corrupt or lacks a needed topic."""
