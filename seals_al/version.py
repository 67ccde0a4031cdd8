"""The single source of the package version; the container image tag derives from it."""

__version__ = "0.1.0"

# The one image every component, the Argo template and the manifests run; its tag is the version.
IMAGE_REPOSITORY = "ghcr.io/seals-al/seals-al"
IMAGE = f"{IMAGE_REPOSITORY}:{__version__}"
