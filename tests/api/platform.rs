//! The HTTP surface, errors and limits (SPEC §1–§2).
