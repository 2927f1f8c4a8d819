"""The top-1/top-k accuracy evaluate module (load it by path: `nasvit_hf.metrics.accuracy_metric_path()`)."""
