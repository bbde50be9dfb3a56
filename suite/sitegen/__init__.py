"""The leaderboard site: records (through ``sparsebench.store``) -> Markdown -> MkDocs.

Needs the ``site`` extra (mkdocs, mkdocs-material, jinja2); the rest of sparsebench does not.
"""

from .build import build, make_server, serve

__all__ = ["build", "make_server", "serve"]
