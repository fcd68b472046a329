"""Lesson: the seven chapters of the lesson notes as short slides on live data.

Layout only: tracer.lesson builds the slides (text, figures, computed answers) from the class's
current trace and the chapters' own runs (ui.lesson_runs). Next/back by buttons and arrow keys,
a chapter list, the position, and a link (?chapter=cache&slide=2) that opens one slide.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import streamlit as st

import models
from stepwise_app import ui
from tracer import lesson
from tracer.plots.common import Html

_ = ui._

# Arrow keys click the Next/Back buttons; added once per browser tab, no network needed.
KEYS_JS = """
<script>
(() => {
  const doc = window.parent.document;
  if (doc.__stepwiseLessonKeys) return;
  doc.__stepwiseLessonKeys = true;
  doc.addEventListener("keydown", (event) => {
    const target = event.target;
    const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(target && target.tagName);
    if (typing || (target && target.isContentEditable)) return;
    const key = {ArrowRight: "lesson_next", ArrowLeft: "lesson_back"}[event.key];
    const button = key && doc.querySelector(`.st-key-${key} button`);
    if (button && !button.disabled) { event.preventDefault(); button.click(); }
  });
})();
</script>
"""


def slides_for(trace_id: str | None, tr) -> list[list[lesson.Slide]]:
    """The slides in this session's language, built once per trace and language."""
    built = st.session_state.setdefault("lesson_slides", {})
    key = (ui.lang(), trace_id)
    if key not in built:
        with st.spinner(_("Preparing the lesson's runs…")):
            own = ui.lesson_runs(tuple(models.available()))
        runs = lesson.Runs(
            generation=tr if tr is not None else own.get("generation"),
            bart=own.get("bart"),
            doctor=own.get("doctor", {}),
            training=own.get("training"),
            trainer=own.get("trainer"),
        )
        built.clear()  # one language and trace at a time per session
        built[key] = lesson.build_lesson(_, runs)
    return built[key]


def position(chapters: list[list[lesson.Slide]]) -> tuple[int, int]:
    """(chapter, slide) from the session, or from the link on the first visit."""
    keys = [key for key, _title in lesson.CHAPTERS]
    if "lesson_pos" not in st.session_state:
        chapter = keys.index(st.query_params["chapter"]) if st.query_params.get("chapter") in keys else 0
        try:
            slide = int(st.query_params.get("slide", "1")) - 1
        except ValueError:
            slide = 0
        st.session_state["lesson_pos"] = (chapter, slide)
    chapter, slide = st.session_state["lesson_pos"]
    chapter = min(max(chapter, 0), len(chapters) - 1)
    slide = min(max(slide, 0), len(chapters[chapter]) - 1)
    st.session_state["lesson_pos"] = (chapter, slide)
    return chapter, slide


def move(chapters: list[list[lesson.Slide]], delta: int) -> None:
    chapter, slide = st.session_state["lesson_pos"]
    slide += delta
    if slide >= len(chapters[chapter]) and chapter + 1 < len(chapters):
        chapter, slide = chapter + 1, 0
    elif slide < 0 and chapter > 0:
        chapter, slide = chapter - 1, len(chapters[chapter - 1]) - 1
    st.session_state["lesson_pos"] = (chapter, slide)


def pick_chapter() -> None:
    st.session_state["lesson_pos"] = (st.session_state["_w_lesson_chapter"], 0)


trace_id, tr = ui.current()
chapters = slides_for(trace_id, tr)
chapter, index = position(chapters)
slide = chapters[chapter][index]
first, last = (chapter, index) == (0, 0), (chapter, index) == (len(chapters) - 1, len(chapters[-1]) - 1)
st.query_params["chapter"] = lesson.CHAPTERS[chapter][0]
st.query_params["slide"] = str(index + 1)

nav_list, nav_back, nav_pos, nav_next = st.columns([4, 2, 3, 2], vertical_alignment="center")
st.session_state["_w_lesson_chapter"] = chapter
nav_list.selectbox(
    _("Chapter"),
    range(len(chapters)),
    format_func=[f"{i + 1}. {_(title)}" for i, (_key, title) in enumerate(lesson.CHAPTERS)].__getitem__,
    key="_w_lesson_chapter",
    on_change=pick_chapter,
    label_visibility="collapsed",
)
nav_back.button(
    "◀ " + _("Back"), key="lesson_back", on_click=move, args=(chapters, -1), disabled=first, width="stretch"
)
nav_next.button(
    _("Next") + " ▶", key="lesson_next", on_click=move, args=(chapters, 1), disabled=last, width="stretch"
)
nav_pos.markdown(
    _("Chapter {chapter} of {chapters} · slide {slide} of {slides}").format(
        chapter=chapter + 1, chapters=len(chapters), slide=index + 1, slides=len(chapters[chapter])
    )
)
st.html(KEYS_JS, unsafe_allow_javascript=True)

with st.container(key="lesson_slide"):
    st.subheader(slide.title)
    st.markdown(slide.idea)
    revealed = st.session_state.setdefault("lesson_revealed", set())
    hide_figure = (
        slide.question is not None and slide.question.figure_shows_answer and (chapter, index) not in revealed
    )
    figure_col, text_col = st.columns([3, 2]) if ui.presenting() else st.columns([2, 1])
    with figure_col:
        if isinstance(slide.figure, pd.DataFrame | pa.Table):
            st.dataframe(
                slide.figure,
                hide_index=True,
                width="stretch",
                height=min(36 * (len(slide.figure) + 1) + 3, 380),
            )
        elif slide.figure is not None and hide_figure:
            st.info(_("The figure shows the answer: it appears when the answer is revealed."))
        elif isinstance(slide.figure, Html):  # the call flow
            with st.container(key="lesson_figure"):
                st.html(slide.figure)
        elif slide.figure is not None:
            figure = slide.figure
            # Presenter: larger text in a shorter chart.
            height = figure.layout.height or 380
            if ui.presenting() and height <= 600:
                figure = figure.update_layout(font_size=16, height=min(height, 380))
            with st.container(key="lesson_figure"):
                st.plotly_chart(figure, width="stretch", key=f"lesson_fig_{chapter}_{index}")
    notice_label, question_label, answer_label = _("What to notice"), _("Question"), _("Answer")
    with text_col:
        st.markdown(f"**{notice_label}:** {slide.notice}")
        if slide.version_note:
            st.caption(slide.version_note)
        if slide.question is not None:
            st.markdown(f"**{question_label}:** {slide.question.text}")
            if (chapter, index) in revealed:
                with st.container(key="lesson_answer"):
                    st.success(f"{answer_label}: {slide.question.answer}")
            elif st.button(_("Reveal the answer"), key="lesson_reveal"):
                revealed.add((chapter, index))
                st.rerun()
