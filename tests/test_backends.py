"""Building a stage's backend from its config node: a constructor that refuses its settings is one line."""
from __future__ import annotations

import pytest

from gen4gen.backends import build_backend
from gen4gen.errors import UserError
from tests.conftest import make_cfg


@pytest.mark.parametrize("overrides,group", [(["segmenter=grabcut", "segmenter.iterations=abc"], "segmenter"),
                                             (["+captioner.bogus=1"], "captioner"),
                                             (["+layout.bogus=1"], "layout"), (["inpainter.feather=abc"], "inpainter")])
def test_a_backend_that_refuses_its_settings_is_one_line(tmp_path, overrides, group):
    cfg = make_cfg(tmp_path, *overrides)
    with pytest.raises(UserError, match=rf"^cannot build the {group} gen4gen\.\S+: "
                                        rf"((ValueError|TypeError): .*|{group}\.\w+=\S+: .*); "
                                        rf"check the {group}\.\* settings"):
        build_backend(cfg[group], group)
