"""The faithfulness ranking of a run's explanation methods (deletion / insertion AUC).

Reads what :func:`tensortap.core.faithfulness.faithfulness` stored in the run; imports no
framework.
"""

from __future__ import annotations

from typing import Any

import holoviews as hv
import pandas as pd

from tensortap.core.faithfulness import read_faithfulness
from tensortap.viz._backend import style

__all__ = ["faithfulness_ranking"]


def faithfulness_ranking(run: Any) -> hv.Table:
    """Methods ranked by mean insertion AUC minus mean deletion AUC (best first).

    Petsiuk et al. 2018: a faithful map keeps the class probability high when its top
    pixels are inserted (high insertion AUC) and drops it fast when they are deleted (low
    deletion AUC).

    Parameters
    ----------
    run : tensortap.Run
        A run whose faithfulness was computed (``tt.faithfulness(model, run, methods)``).

    Returns
    -------
    holoviews.Table
        Columns ``rank``, ``method``, ``deletion AUC``, ``insertion AUC``, ``score``
        (means over samples).
    """
    scores = read_faithfulness(run)
    deletion = scores["deletion_auc"].mean("sample").to_series()
    insertion = scores["insertion_auc"].mean("sample").to_series()
    frame = pd.DataFrame(
        {
            "method": deletion.index,
            "deletion AUC": deletion.values,
            "insertion AUC": insertion.reindex(deletion.index).values,
        }
    )
    frame["score"] = frame["insertion AUC"] - frame["deletion AUC"]
    frame = frame.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    frame.insert(0, "rank", range(1, len(frame) + 1))
    table = hv.Table(
        frame, kdims=["rank", "method"], vdims=["deletion AUC", "insertion AUC", "score"]
    )
    return style(
        table,
        title=f"faithfulness of {len(frame)} methods ({scores.sizes['sample']} samples)",
        bokeh={"width": 520, "height": 40 + 28 * len(frame)},
    )
