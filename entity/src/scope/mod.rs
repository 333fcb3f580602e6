//! The task-local records of what a request writes and reads, which the consistency core
//! (`arena::consistency`) acts on: [`write`] collects the row changes the entity hooks
//! report inside a write's transaction, and [`read`] the cache entries (with their versions)
//! an operation read, for the memo of responses.

pub mod read;
pub mod write;
