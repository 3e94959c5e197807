//! The original's compat modes and hybrid gradient.
