"""The closed set of use cases a conversation can be routed to.

The order is the classifier's label order in every artifact this package
builds; code that needs a set should use ``USE_CASE_SET``.
"""

from __future__ import annotations

from typing import Final

USE_CASES: Final[tuple[str, ...]] = ("chat", "agent", "creative", "multimodal", "reasoning")
USE_CASE_SET: Final[frozenset[str]] = frozenset(USE_CASES)

#: Attachment kinds whose presence forces the ``multimodal`` use case (see ``Router``).
MEDIA_MODALITIES: Final[frozenset[str]] = frozenset({"image", "audio"})
