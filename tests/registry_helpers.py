"""Tests that compare with the committed job files see only the suite's own models.

Job lists read the registry when they render, so a stand-in model that another
test registered (tests/_tuning_fake.py's ``tinytune``) would otherwise get a
job file that is, rightly, not committed.
"""

from __future__ import annotations

import pytest


@pytest.fixture()
def suite_models_only(monkeypatch):
    from models import registry

    own = {name: spec for name, spec in registry._REGISTRY.items() if spec.builder.__module__.startswith("models.")}
    monkeypatch.setattr(registry, "_REGISTRY", own)
    return sorted(own)
