"""Where decisions and epochs live. `DecisionStore` is the interface; SQLite is the embedded default."""
from fito.coord.base import Decision, DecisionStore
from fito.coord.sqlite import SqliteDecisionStore

__all__ = ["Decision", "DecisionStore", "SqliteDecisionStore"]
