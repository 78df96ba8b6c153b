"""The published numbers of "Are Unified VLMs Necessary" (arXiv 2505.23043), appendix E, for side-by-side reports.

VQA scores in percent (time, weather, position, battery, total); FID where the paper gives one.
"""

from __future__ import annotations

COLUMNS = ("time", "weather", "position", "battery", "total")

#: Table A3: mixed vs task-specific (SmartWatch, default data). FID in the last entry (None: not reported).
TABLE_A3: dict[str, tuple[float | None, ...]] = {
    "SigLIP_u": (49.7, 100.0, 93.4, 56.3, 76.6, None),
    "SigLIP-VQ": (66.5, 100.0, 100.0, 69.2, 85.6, 198.2),
    "SigLIP-SigLIP": (95.8, 100.0, 100.0, 98.4, 98.7, None),
    "VQ_u": (50.8, 100.0, 100.0, 61.6, 80.5, None),
    "VQ_g": (None, None, None, None, None, 210.9),
    "VQ-SigLIP": (45.8, 100.0, 100.0, 81.2, 85.5, None),
    "VQ-VQ": (52.7, 100.0, 100.0, 96.8, 89.3, 190.2),
    "SigLIP*_u": (50.4, 100.0, 98.8, 49.5, 78.2, None),
    "SigLIP*-SigLIP": (54.3, 100.0, 100.0, 98.9, 91.3, None),
    "VQ*_u": (52.4, 100.0, 97.9, 56.9, 78.9, None),
    "VQ*-VQ": (60.0, 100.0, 100.0, 80.6, 85.1, 195.8),
}

#: Table A5: weather-biased training data.
TABLE_A5: dict[str, tuple[float, ...]] = {
    "SigLIP_u": (52.9, 28.6, 100.0, 99.7, 78.7),
    "SigLIP-SigLIP": (81.7, 100.0, 100.0, 97.2, 95.9),
    "SigLIP-SigLIP-D": (99.6, 100.0, 100.0, 99.9, 99.9),
    "SigLIP-VQ": (52.2, 100.0, 100.0, 98.6, 90.8),
    "VQ_u": (50.9, 54.3, 81.3, 77.5, 70.0),
    "VQ-VQ": (49.1, 97.1, 100.0, 94.4, 88.7),
    "VQ-VQ-D": (50.7, 100.0, 100.0, 97.4, 90.3),
    "VQ-SigLIP": (52.8, 100.0, 100.0, 80.6, 86.6),
}

#: Table A6: battery-biased training data.
TABLE_A6: dict[str, tuple[float, ...]] = {
    "SigLIP_u": (55.7, 100.0, 100.0, 70.3, 84.7),
    "SigLIP-SigLIP": (96.6, 100.0, 100.0, 98.0, 98.9),
    "SigLIP-SigLIP-D": (89.3, 100.0, 100.0, 97.2, 97.4),
    "SigLIP-VQ": (53.6, 100.0, 100.0, 95.8, 90.4),
    "VQ_u": (50.1, 100.0, 100.0, 61.3, 81.5),
    "VQ-VQ": (49.8, 100.0, 100.0, 69.4, 83.4),
    "VQ-VQ-D": (48.8, 100.0, 100.0, 74.5, 84.4),
    "VQ-SigLIP": (46.8, 100.0, 86.3, 67.1, 76.7),
}
