"""The Streamlit app of Stepwise: app.py (the entry and the navigation), ui.py (the glue the pages
share) and pages/ (one file per view).

Start it with `stepwise app` (installed with the `app` extra: `pip install "stepwise[app]"`) or,
from a checkout, `streamlit run app.py`. Importing this package imports nothing: only the pages and
ui.py import Streamlit.
"""
