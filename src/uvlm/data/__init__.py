"""SmartWatch data: attributes, rendering, texts, splits, storage, scoring."""

from uvlm.data.attributes import CORNERS, TEXT_ATTRIBUTES, WEATHERS, WatchAttributes
from uvlm.data.config import MIN_RESOLUTION, TASKS, Bias, SplitConfig
from uvlm.data.smartwatch import Sample, SmartWatch

__all__ = ["CORNERS", "TEXT_ATTRIBUTES", "WEATHERS", "WatchAttributes", "MIN_RESOLUTION", "TASKS", "Bias",
           "SplitConfig", "Sample", "SmartWatch"]
