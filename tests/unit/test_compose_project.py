from __future__ import annotations

import pytest

from composecache import yaml
from composecache.compose import project

CONFIG_OUTPUT = """\
name: shop
services:
  api:
    build:
      context: /src/shop
      dockerfile: Dockerfile
      target: api
      cache_from:
        - type=local,src=/own
      args:
        FLAG: "yes"
        MODE: "0755"
    image: registry.example.com/shop/api:dev
    x-composecache:
      mode: min
      scope: "on"
  db:
    image: postgres:16
    environment:
      PASSWORD: $$secret
"""


def test_yaml_booleans_are_yaml_1_2_s_as_compose_reads_them() -> None:
    assert yaml.load("a: on\nb: yes\nc: off\nd: true\ne: False\n") == {"a": "on", "b": "yes", "c": "off",
                                                                       "d": True, "e": False}  # fmt: skip
    assert yaml.load(yaml.dump({"scope": "on", "n": [1, "no"]})) == {"scope": "on", "n": [1, "no"]}


def test_model_from_config_output() -> None:
    model = project.model_from_config_output(CONFIG_OUTPUT)
    assert model.name == "shop"
    api, db = model.services["api"], model.services["db"]
    assert api.builds and not db.builds
    assert api.build is not None and api.build["target"] == "api"
    settings, errors = project.service_settings(api)
    assert errors == [] and settings.mode == "min" and settings.scope == "on"


@pytest.mark.parametrize("text", ["services: [", "- a\n- b\n", ""])
def test_bad_yaml_is_a_model_error_not_a_traceback(text: str) -> None:
    with pytest.raises(project.ModelError, match=r"."):
        project.model_from_config_output(text)
