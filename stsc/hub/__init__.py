"""Dataset search and verification: the Hugging Face Hub and the offline catalog of bundled tables,
behind one ``DatasetSource`` protocol.

Public API: ``make_source(hub_cfg, store)``, ``DatasetSource``, ``load_frame(record)``,
``suggest_targets(record)``; the ``verify`` stage is ``stsc.hub.verify.run_verify``.
"""

from stsc.hub.frames import load_frame, suggest_targets
from stsc.hub.source import DatasetSource, make_source

__all__ = ["DatasetSource", "load_frame", "make_source", "suggest_targets"]
