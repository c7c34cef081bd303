//! Every watched project: which ones (configured, discovered, this shard's), when each is
//! polled, and the bookkeeping around them.
//!
//! - [`discovery`]: one pass over `[[groups]]` and `discovery.membership`.
//! - [`registry`]: a pass reconciled with the watched set by a pure function.
//! - [`pacing`]: each project's next delay from its activity, within the request budget.
//! - [`runner`]: the tasks that poll, the checkpoint loop, restore and readiness.

pub mod discovery;
pub mod pacing;
pub mod registry;
pub mod runner;
