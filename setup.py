"""Packaging detail pyproject.toml cannot say: the top-level data folders ship inside the package.

The repository layout keeps recipes/, targets/, calibration_sets/ and eval_sets/ at the top level;
a wheel carries them as edgecompile/_shipped/<folder>/ so that an installed edgecompile finds them
(edgecompile/config/resolve.py looks there, and in the checkout when run from one).
"""

from setuptools import find_packages, setup

SHIPPED = ("recipes", "targets", "calibration_sets", "eval_sets")

setup(
    packages=find_packages(include=["edgecompile", "edgecompile.*"]) + [f"edgecompile._shipped.{f}" for f in SHIPPED],
    package_dir={"": ".", **{f"edgecompile._shipped.{f}": f for f in SHIPPED}},
    package_data={
        "edgecompile.zoo": ["models/*/*", "models/README.md"],
        "edgecompile.reports": ["templates/*"],  # the HTML report's jinja2 templates and stylesheet
        **{f"edgecompile._shipped.{f}": ["*.yaml", "*/*.yaml", "README.md"] for f in SHIPPED},
    },
)
