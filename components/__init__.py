"""Thin Kubeflow Pipelines components over the seals_al core package, one folder per step."""
