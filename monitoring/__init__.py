"""Monitoring: the metrics contract, the workers' metrics hook, the exporter, dashboards and alerts."""
