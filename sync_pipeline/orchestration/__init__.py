"""The Dagster layer: assets, checks, sensors, schedules, resources and executors.

It turns the configured tables into Dagster definitions and hands each partition to the engine
(:mod:`sync_pipeline.engine`) inside a step process; it builds no SQL of its own.
"""
