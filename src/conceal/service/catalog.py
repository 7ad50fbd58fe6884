"""The models a server offers: loaded once at start, described for /v1/models and the page.

Options are checked exactly as ``conceal apply`` checks them, so a bad ``as`` gets the CLI's one line.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError

# The README's headline model of each method (the first "shipped" model of each row).
DEFAULT_MODELS = ("concealer-utkface-64", "anonymizer-lfw-wide-leace", "masker-lfw-gender")
REPO_MODELS = Path(__file__).resolve().parents[3] / "models"


@dataclass
class ServedModel:
    name: str
    api: object  # a conceal.methods.ModelAPI (or anything with its apply / check_options / image_size / method.name)

    @property
    def method(self) -> str:
        return self.api.method.name

    @property
    def takes_attributes(self) -> bool:
        return "as_" in inspect.signature(self.api.check_options).parameters

    def options(self, as_text: str | None) -> dict:
        """``as`` text -> checked keyword options of ``apply``; LabelError / ConfigError with the CLI's line."""
        if not as_text:
            return {}
        if not self.takes_attributes:
            raise ConfigError(f"--as is not an option of {self.method} models")
        from ..data.schema import parse_attributes as _parse_attributes  # the CLI's own --as parser: the same values, the same one-line errors

        options = {"as_": _parse_attributes(as_text)}
        self.api.check_options(**options)
        return options

    def describe(self) -> dict:
        attributes = []
        if self.takes_attributes:
            for label in self.api.schema.to_json():  # name, kind, classes | range
                attributes.append({**label, "unspecified": True})  # every attribute may be left unspecified
        return {"name": self.name, "method": self.method, "image_size": self.api.image_size, "attributes": attributes}


def default_model_paths() -> list[Path]:
    """The headline models under ./models, else under the checkout's models/; FileNotFoundError when none is there."""
    for base in (Path("models"), REPO_MODELS):
        found = [base / name for name in DEFAULT_MODELS if (base / name / "model.json").is_file()]
        if found:
            return found
    raise FileNotFoundError(f"no shipped model ({', '.join(DEFAULT_MODELS)}) under ./models or {REPO_MODELS}: name the models to serve")


def load_models(paths: list[str | Path]) -> dict[str, ServedModel]:
    """Model directories -> {name: ServedModel}, loaded once for inference only (batch norms folded), each on
    the backend `conceal apply` picks (``backend="auto"``: onnxruntime where it is the method's faster one)."""
    from ..methods import load_api

    models: dict[str, ServedModel] = {}
    for path in map(Path, paths):
        name = path.resolve().name if path.name not in ("checkpoint", "") else path.resolve().parent.name
        if name in models:
            raise ConfigError(f"two models are both named {name!r}: serve models from folders with different names")
        models[name] = ServedModel(name, load_api(path, fold_batch_norm=True, backend="auto"))
    return models
