//! Agreement with the golden fixtures of the independent Python oracle (dense complex128
//! inverse, dense gradient formula cross-checked by finite differences; `fixtures/bk_core/gen.py`).
