"""`evaluate` metric modules shipped with the package, loaded offline: `evaluate.load(metric_path("perplexity"))`.

Each metric is a folder `metrics/<name>/<name>.py` holding one `evaluate.Metric` subclass (the layout `evaluate.load`
expects for a local directory). Hub-hosted metrics cannot be fetched offline, hence these local copies.
"""

import os


METRICS_DIR = os.path.dirname(os.path.abspath(__file__))


def metric_path(name: str) -> str:
    """Absolute path of the metric folder `rnn_lm_hf/metrics/<name>`, for `evaluate.load`."""
    path = os.path.join(METRICS_DIR, name)
    if not os.path.isfile(os.path.join(path, f"{name}.py")):
        raise FileNotFoundError(f"No metric {name!r} in {METRICS_DIR}; available: {', '.join(available_metrics())}.")
    return path


def available_metrics() -> list[str]:
    """Names of the metric folders shipped with the package."""
    return sorted(
        entry for entry in os.listdir(METRICS_DIR) if os.path.isfile(os.path.join(METRICS_DIR, entry, f"{entry}.py"))
    )
