"""The generated photos of the tests and benchmarks live in the library (``conceal.faces.composites``,
so ``conceal bench`` can build them too); this module keeps the tests' import name."""

from conceal.faces.composites import FACE_BOX, HEAD_BOX, astronaut_head, background, composite, found, plant  # noqa: F401
