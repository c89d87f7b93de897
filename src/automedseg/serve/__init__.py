"""The review app: a REST API over a durable job store, and a browser page (NiiVue) to see the
automatic masks, fix them with a box, and download them (``automedseg serve``)."""

from automedseg.serve.app import create_app

__all__ = ["create_app"]
