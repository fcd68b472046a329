"""Stepwise, the app, from a checkout: `streamlit run app.py`.

The app lives in the stepwise_app package (stepwise_app/app.py, ui.py, pages/), so that it installs
with Stepwise and starts anywhere as `stepwise app`; this file only runs it.
"""

import runpy
from pathlib import Path

runpy.run_path(str(Path(__file__).resolve().parent / "stepwise_app" / "app.py"), run_name="__main__")
