"""What every component shares: the one image (its tag is the package version) and no pip
installs at run time (the image already holds kfp and seals_al, pinned)."""

from __future__ import annotations

import functools

from kfp import dsl

from seals_al.version import IMAGE

seals_component = functools.partial(dsl.component, base_image=IMAGE, install_kfp_package=False)
