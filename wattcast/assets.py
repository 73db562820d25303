"""Where wattcast's shipped files are, installed or in a checkout.

Everything wattcast needs at run time ships as package data inside the
``wattcast`` package: the sample data (``wattcast/sample/``), the JSON Schemas
(``wattcast/schemas/``), the trained model artifacts and the broker
configuration (``wattcast/_assets/models`` and ``wattcast/_assets/mosquitto``:
symlinks to the repository's ``models/`` and ``mosquitto/`` in a checkout, real
folders in a built wheel).  They are located from this file's own folder, never
from the current directory or ``importlib.resources`` of a name that a folder
in the current directory could shadow.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
ASSETS_DIR = PACKAGE_DIR / "_assets"


def package_path(*parts: str) -> Path:
    """A file or folder inside the installed ``wattcast`` package."""
    return PACKAGE_DIR.joinpath(*parts)


def models_dir() -> Path:
    """The shipped model artifacts (``models/`` of the repository)."""
    return ASSETS_DIR / "models"


def mosquitto_dir() -> Path:
    """The shipped broker configuration (``mosquitto/`` of the repository)."""
    return ASSETS_DIR / "mosquitto"


def sample_dir() -> Path:
    return PACKAGE_DIR / "sample"


def schemas_dir() -> Path:
    return PACKAGE_DIR / "schemas"
