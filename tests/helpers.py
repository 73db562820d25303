"""What several test modules share (importable as ``helpers``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

from pathlib import Path

#: the repository's root (the checkout under test)
REPO = Path(__file__).resolve().parents[1]
