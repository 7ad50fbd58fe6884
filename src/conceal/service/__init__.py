"""``conceal serve``: an HTTP API and a web page to conceal photos (FastAPI + uvicorn: ``pip install 'conceal[serve]'``).

>>> from conceal.service import create_app, load_models
>>> app = create_app(load_models(["models/concealer-utkface-64"]))   # any ASGI server runs it
"""

from __future__ import annotations

from .app import Limits, create_app
from .catalog import DEFAULT_MODELS, ServedModel, default_model_paths, load_models

INSTALL_HINT = "pip install 'conceal[serve]'"


def serve(model_paths: list, host: str = "127.0.0.1", port: int = 8000, limits: Limits = Limits()) -> None:
    """Load the models once, then serve until interrupted."""
    import logging

    import uvicorn

    app = create_app(load_models(model_paths or default_model_paths()), limits)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    names = ", ".join(app.state.models)
    logging.getLogger("conceal.service").info("serving %s on http://%s:%d (page: /, API docs: /docs)", names, host, port)
    uvicorn.run(app, host=host, port=port, log_level="info")


__all__ = ["DEFAULT_MODELS", "INSTALL_HINT", "Limits", "ServedModel", "create_app", "default_model_paths", "load_models", "serve"]
