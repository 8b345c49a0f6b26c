"""pytest-benchmark suites (bench_*.py) and the report that turns their JSON into a table and a chart."""
