"""Regenerate otava_reference.json: change points that Apache Otava 0.8.0 finds on fixed series.

Not a test. Otava pins numpy==2.2 and pulls in BigQuery, so it is not a dependency of harness; run this
in a throw-away virtualenv (`pip install apache-otava==0.8.0 numpy`) and commit the JSON it writes.
`tests/report/test_changepoint.py` checks that harness's own E-Divisive implementation agrees with it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from otava.analysis import compute_change_points


def series() -> dict[str, list[float]]:
    rng = np.random.default_rng(20240601)

    def noise(n: int, mean: float, rel: float) -> list[float]:
        return list(mean * (1 + rel * rng.standard_normal(n)))

    out = {
        "step_up_5pct": noise(60, 100.0, 0.02) + noise(40, 105.0 / 100.0 * 100.0, 0.02),
        "three_steps": noise(50, 10.0, 0.01) + noise(50, 11.0, 0.01) + noise(60, 10.5, 0.01)
        + noise(40, 12.0, 0.01),
        "stationary": noise(100, 1.0, 0.02),
        "short": noise(6, 2.0, 0.01) + noise(4, 2.4, 0.01),
        "spike": noise(40, 50.0, 0.01) + [80.0] + noise(40, 50.0, 0.01),
        "drift": [100.0 + 0.2 * i + float(x) for i, x in enumerate(rng.standard_normal(120))],
        "step_down_tail": noise(80, 0.5, 0.02) + noise(6, 0.45, 0.02),
    }
    return {k: [round(float(v), 6) for v in vals] for k, vals in out.items()}


def main() -> None:
    cases = []
    for name, values in series().items():
        for window, pvalue in ((50, 0.001), (30, 0.01)):
            cps, _ = compute_change_points(values, window_len=window, max_pvalue=pvalue)
            cases.append({
                "name": name, "window": window, "max_pvalue": pvalue, "series": values,
                "change_points": [{
                    "index": int(cp.index), "qhat": float(cp.qhat), "pvalue": float(cp.stats.pvalue),
                    "mean_before": float(cp.stats.mean_1), "mean_after": float(cp.stats.mean_2),
                } for cp in cps],
            })
    out = Path(__file__).with_name("otava_reference.json")
    out.write_text(json.dumps({"generator": "apache-otava 0.8.0 compute_change_points", "cases": cases},
                              indent=1) + "\n")


if __name__ == "__main__":
    main()
