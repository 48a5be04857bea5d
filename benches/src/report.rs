//! report (next)
