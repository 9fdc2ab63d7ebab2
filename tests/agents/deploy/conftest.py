import pytest
from deploy_helpers import save_untrained


@pytest.fixture
def saved_policy(tmp_path):
    return save_untrained(tmp_path / "policy")
