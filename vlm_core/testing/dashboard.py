"""Run one task on the dashboard in a test, as an operator would (Streamlit's AppTest).

    from vlm_core.testing.dashboard import run_in_dashboard

    run = run_in_dashboard("hello.threshold")  # its first bundled sample, default parameters
    assert run.results == 1 and run.shown("image")

    run = run_in_dashboard("hello.threshold", files=[photo], params={"level": 0.3})

:func:`run_in_dashboard` opens the app, goes to the Run page, selects the task, gives it its
inputs (a bundled sample, or files uploaded through the page's uploader, checked as any upload
is), fills the form (its defaults, with ``params`` over them), presses Run and waits for the
result. It raises :class:`DashboardRunError` with what the page showed unless the run ended in
the page's success line with at least one rendered result and no error box. The pytest fixture
``vlm_dashboard`` (:mod:`vlm_core.testing.pytest_plugin`) calls it with a private VLM_HOME.

Streamlit is imported when the function is called, not with this module.
"""

from __future__ import annotations

import mimetypes
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamlit.testing.v1 import AppTest

#: the widget kinds a parameter form may use (those of :mod:`vlm_dashboard.forms`)
FORM_WIDGETS = (
    "number_input",
    "text_input",
    "text_area",
    "checkbox",
    "toggle",
    "selectbox",
    "multiselect",
    "slider",
    "select_slider",
    "radio",
)


class DashboardRunError(AssertionError):
    """The task did not run to a rendered result on the dashboard; the message says what the
    page showed instead."""


@dataclass(frozen=True)
class DashboardRun:
    """What the Run page showed after one run."""

    #: the app after the run, to look further (``app.image``, ``app.metric``, ``app.get(...)``)
    app: AppTest
    task: str
    #: the page's success line, e.g. ``"Run 1a2b3c4d of hello.threshold: 1 result(s) in 0.1 s"``
    summary: str
    #: how many results the page rendered
    results: int

    def shown(self, element: str) -> list[Any]:
        """The elements of one Streamlit type the page shows (``"image"``, ``"metric"``,
        ``"dataframe"``, ``"markdown"``, ``"download_button"``...)."""
        return list(self.app.get(element))


def _app_path() -> str:
    from vlm_core.tasks import package_file

    return str(package_file("vlm_dashboard", "app.py"))


@contextmanager
def _fresh_app_state() -> Iterator[None]:
    """A fresh 'server' for the app: Streamlit's caches emptied (the registry is loaded again
    from the plugins installed now), unexpected errors raised (``VLM_DEBUG=1``), and
    ``sys.modules["__main__"]`` given back afterwards (AppTest runs the app as ``__main__``
    and leaves it there, which breaks processes started later with "spawn")."""
    import streamlit as st

    main, debug = sys.modules["__main__"], os.environ.get("VLM_DEBUG")
    st.cache_resource.clear()
    st.cache_data.clear()
    os.environ["VLM_DEBUG"] = "1"
    try:
        yield
    finally:
        sys.modules["__main__"] = main
        if debug is None:
            os.environ.pop("VLM_DEBUG", None)
        else:
            os.environ["VLM_DEBUG"] = debug
        st.cache_resource.clear()


def _shown_errors(at: AppTest) -> list[str]:
    found = [f"{type(e).__name__}: {e.value}" for e in at.exception]
    return found + [str(e.value) for e in at.error]


def _check(at: AppTest, doing: str) -> AppTest:
    """``at``, unless the script raised or the page shows an error box."""
    errors = _shown_errors(at)
    if errors:
        raise DashboardRunError(f"{doing}: the page shows " + " | ".join(errors))
    return at


def _form_widget(at: AppTest, name: str) -> Any:
    """The widget of parameter ``name`` in the Run page's form (its key ends in ``.name``)."""
    for kind in FORM_WIDGETS:
        for widget in getattr(at, kind):
            if (widget.key or "").startswith("run.form.") and widget.key.endswith(f".{name}"):
                return widget
    raise DashboardRunError(f"the form has no widget for parameter '{name}'")


def _upload(path: Path) -> tuple[str, bytes, str]:
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return path.name, path.read_bytes(), kind


def run_in_dashboard(
    task: str,
    *,
    sample: str | None = None,
    files: Sequence[str | Path] = (),
    params: Mapping[str, Any] | None = None,
    timeout: float = 120.0,
) -> DashboardRun:
    """Run ``task`` on the dashboard's Run page and return what it showed.

    Args:
        task: the task id, e.g. ``"hello.threshold"``.
        sample: the name of a bundled sample to run (None: the page's first choice, which is
            the first sample when the task has any).
        files: files to upload instead of a sample (each checked by content like any upload).
        params: form values over the defaults, by parameter name (a number, text, bool or
            choice, as the widget takes it).
        timeout: seconds each script run of the page may take (the run itself included).

    Raises:
        DashboardRunError: the task is not offered, a widget is missing, the page shows an
            error, or the run rendered no result.
    """
    from streamlit.testing.v1 import AppTest

    with _fresh_app_state():
        at = AppTest.from_file(_app_path(), default_timeout=timeout).run()
        at = _check(at.switch_page("pages/run.py").run(), "opening the Run page")
        choice = at.selectbox(key="run.task")
        # the options as shown: "Title  (task.id)"
        if not any(o == task or o.endswith(f"({task})") for o in choice.options):
            raise DashboardRunError(f"the Run page does not offer '{task}' (it offers "
                                    f"{', '.join(choice.options) or 'no task'})")  # fmt: skip
        at = _check(choice.set_value(task).run(), f"selecting {task}")
        source = f"run.source.{task}"
        if files:
            at = _check(at.radio(key=source).set_value("upload").run(), "choosing uploads")
            at.file_uploader[0].set_value([_upload(Path(f)) for f in files])
        elif sample is not None:
            at = _check(at.radio(key=source).set_value("sample").run(), "choosing a sample")
            at = _check(at.selectbox(key=f"run.sample.{task}").set_value(sample).run(),
                        f"choosing sample '{sample}'")  # fmt: skip
        for name, value in (params or {}).items():
            _form_widget(at, name).set_value(value)
        buttons = [b for b in at.button if b.label == "Run"]
        if not buttons:
            raise DashboardRunError(f"the Run page shows no Run button for {task}")
        at = _check(buttons[0].click().run(), f"running {task}")
    summary = next((str(s.value) for s in at.success if f" of {task}: " in str(s.value)), "")
    found = re.search(r": (\d+) result\(s\)", summary)
    results = int(found.group(1)) if found else 0
    if not results:
        raise DashboardRunError(f"running {task} rendered no result (the page says: "
                                f"{summary or 'nothing'})")  # fmt: skip
    return DashboardRun(at, task, summary, results)


__all__ = ["DashboardRun", "DashboardRunError", "run_in_dashboard"]
