"""SEALS pipelines: wiring only; every step is a component from components/."""
