"""Finding: a job whose positions include +-1e308 made POST /api/v1/jobs answer 500.

The model now bounds coordinates, so the refusal is a validation error naming the atom."""
import pytest
from atomiverse.atoms import Atoms
from pydantic import ValidationError


@pytest.mark.parametrize("huge", [1e308, -1e308])
def test_huge_coordinate_is_refused_naming_the_atom(huge):
    with pytest.raises(ValidationError) as err:
        Atoms(numbers=[1, 1], positions=[[0, 0, 0], [huge, 0, 0]])
    assert "atom 1" in str(err.value)


def test_ordinary_molecule_still_accepted():
    Atoms(numbers=[1, 1], positions=[[0, 0, 0], [0.74, 0, 0]])
