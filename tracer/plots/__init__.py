"""Pure functions from a Trace (or a report) to plotly Figures and pandas DataFrames.

One module per view, so the pages stay thin: `generation` (overview, step replay, attention,
KV cache), `doctor` (cache on vs off), `training` (a teacher-forced step and a Trainer step).
Nothing here imports Streamlit or touches a model.
"""
