"""The hooks of the SmartWatch lmms-eval task (``!function utils.*`` in smartwatch_template.yaml).

lmms-eval imports this file by its path; the hooks live in :mod:`uvlm.integrations.lmms_eval.task`.
"""

from uvlm.integrations.lmms_eval.task import (  # noqa: F401
    aggregate_battery, aggregate_position, aggregate_time, aggregate_total, aggregate_weather, doc_to_target,
    doc_to_text, doc_to_visual, process_docs, process_results)
