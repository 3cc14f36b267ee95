"""Build script: the ``diffviewer`` packages, plus the top-level ``resources/`` folder.

Everything else is declared in ``pyproject.toml``. ``resources/`` (the demo pair) stays
where a source checkout has it and is installed as the data package
``diffviewer.resources``, so a wheel carries it inside ``diffviewer/`` where
:func:`diffviewer.io.demo_pair` looks for it; a package list cannot be both found
automatically and extended in ``pyproject.toml``, hence this file.
"""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["diffviewer", "diffviewer.*"]),
        "diffviewer.resources",
        "diffviewer.resources.demo",
    ],
    package_dir={"diffviewer.resources": "resources"},
)
