import warnings

# sacred 0.8.7 imports pkg_resources (deprecated, pinned via setuptools<81): not the user's concern.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
