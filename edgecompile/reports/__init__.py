"""Reports: per-build Markdown/HTML/JUnit, the multi-build table, the tier Pareto view and plots."""
