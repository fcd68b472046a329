"""Build hook: the installed app reads the same Streamlit settings as a checkout.

Streamlit reads `.streamlit/config.toml` beside the script it runs. A checkout keeps it at the
top (for `streamlit run app.py`); the wheel puts a copy beside stepwise_app/app.py, which
`stepwise app` runs. Everything else is in pyproject.toml.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

STREAMLIT_CONFIG = Path(".streamlit") / "config.toml"


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "stepwise_app" / STREAMLIT_CONFIG
        self.mkpath(str(target.parent))
        self.copy_file(str(STREAMLIT_CONFIG), str(target))


setup(cmdclass={"build_py": BuildPy})
