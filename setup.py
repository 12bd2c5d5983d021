"""Only wires the cffi build; all metadata lives in pyproject.toml."""

from setuptools import setup

setup(
    cffi_modules=["csrc/build_accel.py:ffibuilder"],
    # One abi3 wheel serves every supported CPython (cffi's API mode keeps to
    # the limited API).
    options={"bdist_wheel": {"py_limited_api": "cp311"}},
)
