"""See the data: ``serve`` a local web page over a dataset, build folder or keylog (``jumpnet-stream view``),
``write_report`` a build's one-file offline report (``DIR/report.html``), and the marks of samples judged bad
(``load_marks``, and ``drop_marked`` to leave them out of a stage's chunks: ``--exclude``)."""

from .marks import IDENTITY, drop_marked, load_marks, marks_path
from .report import write_report
from .server import serve

__all__ = ["IDENTITY", "drop_marked", "load_marks", "marks_path", "serve", "write_report"]
