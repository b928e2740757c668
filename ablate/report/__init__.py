"""A study's report from its storage: the collected data and the run totals (:mod:`.build`), the
table as numbers (:mod:`.rows`), and the formats: Markdown (:mod:`.markdown`, its provenance lines
in :mod:`.provenance`), HTML (:mod:`.html`), LaTeX, CSV and JSON (:mod:`.formats`), the cost
columns (:mod:`.costs`), figures (:mod:`.figures`) and a W&B summary run (:mod:`.wandb`)."""
from .build import collect, main, write_report

__all__ = ["collect", "main", "write_report"]
