"""track2-retrieval: decoupled text-to-image retrieval of pedestrians and vehicles."""

__version__ = "0.1.0"
