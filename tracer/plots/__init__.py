"""Pure functions from a Trace (or a report) to plotly Figures and pandas DataFrames.

One module per view, so the pages stay thin: `generation` (overview, step replay, attention,
KV cache), `batch` (a padded batch's rows side by side, masked keys drawn as masked, BART's
source mask), `beams` (the beam tree, candidates, hypotheses, the cache reorder), `doctor` (cache
on vs off), `training` (a teacher-forced step and a Trainer step);
and `common`, the pieces they share (token labels, shape and value text, the attention heatmap,
the message figure), written once. Nothing here imports Streamlit or touches a model.
"""
