"""A study's report: ``ablate report`` and :func:`write_report` (:mod:`.command`, the one module here
that reads storage and asks the doctor), the files written from what they gathered (:mod:`.build`),
the table as numbers (:mod:`.rows`), and the formats: Markdown (:mod:`.markdown`, its provenance lines
in :mod:`.provenance`), HTML (:mod:`.html`), LaTeX, CSV and JSON (:mod:`.formats`), the cost
columns (:mod:`.costs`), figures (:mod:`.figures`) and a W&B summary run (:mod:`.wandb`)."""
from .build import write
from .command import main, write_report

__all__ = ["main", "write", "write_report"]
