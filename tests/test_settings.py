"""Default and short secrets are refused outside dev mode."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from api.settings import Settings

pytestmark = pytest.mark.unit

STRONG = "x" * 40


def test_dev_mode_accepts_the_livekit_dev_keys() -> None:
    settings = Settings(kaiwa_env="dev", livekit_api_key="devkey", livekit_api_secret="secret")
    assert settings.livekit_api_secret == "secret"


@pytest.mark.parametrize("env", ["prod", "test"])
@pytest.mark.parametrize(
    "secret,password", [("secret", "a-long-admin-password"), (STRONG, "admin"), ("short", STRONG)]
)
def test_weak_secrets_are_refused_outside_dev(env: str, secret: str, password: str) -> None:
    with pytest.raises(ValidationError, match="refusing to start"):
        Settings(kaiwa_env=env, livekit_api_secret=secret, admin_password=password)


def test_strong_secrets_are_accepted_in_prod() -> None:
    settings = Settings(kaiwa_env="prod", livekit_api_secret=STRONG, admin_password=STRONG)
    assert settings.kaiwa_env == "prod"
