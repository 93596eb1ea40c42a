"""Rewrite densevit/catalogue.py (what ``densevit list`` prints) from the registries.

Run after adding, removing or changing a built-in backbone or model:
``python tools/update_catalogue.py``; tests/test_cli_list.py fails until it has been run.
"""
from __future__ import annotations

from pathlib import Path

from densevit.cli.listing import catalogue_source
from densevit.io import write_text_atomic

if __name__ == "__main__":
    target = Path(__file__).resolve().parents[1] / "densevit" / "catalogue.py"
    write_text_atomic(target, catalogue_source())
    print(f"wrote {target}")
