"""Reports: Slack, Grafana dashboards, performance alerts."""
