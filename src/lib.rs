//! Root package of the tapnet workspace.
//!
//! It holds no code: it exists so that the privileged integration tests in
//! `tests/` (real namespaces, real TAP devices, real TCP) can live at the
//! root of the repository. See `README.md` for how to run them.
