"""Staff role names are accepted in every spelling the API and sheets use: the canonical English names too."""

from __future__ import annotations

import pytest

from geo.staff.register import ROLE_LABELS, StaffError, normalise_role


@pytest.mark.parametrize("role", sorted(ROLE_LABELS))
def test_canonical_and_chinese_names(role):
    assert normalise_role(role) == role
    assert normalise_role(ROLE_LABELS[role]) == role


def test_spellings_and_unknowns():
    assert normalise_role("Grid Worker (Fulltime)") == "grid_worker_fulltime"
    assert normalise_role("兼职网格员") == "grid_worker_parttime"
    with pytest.raises(StaffError):
        normalise_role("mayor")
